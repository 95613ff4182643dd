//! The `gospy` command. Everything lives in the library; see `gospy::cli`.

fn main() {
    std::process::exit(gospy::cli::run());
}
