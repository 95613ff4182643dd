//! Printing decoded variables: Go-like text, one line per variable, or JSON
//! (schema in README.md, "gospy var").

use std::fmt::Write as _;
use std::io::{self, Write};

use serde_json::{json, Map, Value as Json};

use super::{TypedValue, Value, Variable};

/// Writes `name = value` lines: scalars as `int64(42)`, strings quoted,
/// composites as Go composite literals (`main.T{A: 1, B: "x"}`), pointers
/// as `&...`, collections with their length (and capacity).
pub fn write_text(out: &mut dyn Write, vars: &[Variable]) -> io::Result<()> {
    for v in vars {
        let mut s = String::new();
        text(&mut s, &v.value, true);
        writeln!(out, "{} = {s}", v.name)?;
    }
    Ok(())
}

/// The header fields of the JSON document.
pub struct JsonHeader {
    /// Target PID.
    pub pid: i32,
    /// Target executable.
    pub binary: String,
    /// The `--bin` file, if any.
    pub dwarf_binary: Option<String>,
    /// Go version of the target (`go1.24.4`).
    pub go_version: String,
}

/// The whole JSON document for `vars`.
pub fn json_document(header: &JsonHeader, vars: &[Variable]) -> Json {
    json!({
        "pid": header.pid,
        "binary": header.binary,
        "dwarf_binary": header.dwarf_binary,
        "go_version": header.go_version,
        "variables": vars.iter().map(|v| json!({
            "name": v.name,
            "type": v.value.type_name,
            "address": hex(v.address),
            "value": to_json(&v.value),
        })).collect::<Vec<_>>(),
    })
}

fn hex(addr: u64) -> String {
    format!("{addr:#x}")
}

/// One value as JSON: an object with `kind`, `type` and the kind's fields.
pub fn to_json(v: &TypedValue) -> Json {
    let mut m = Map::new();
    let mut put = |k: &str, v: Json| {
        m.insert(k.to_string(), v);
    };
    let kind = match &v.value {
        Value::Int(i) => {
            put("value", json!(i));
            "int"
        }
        Value::Uint(u) => {
            put("value", json!(u));
            "uint"
        }
        Value::Float(f) => {
            put("value", float_json(*f));
            "float"
        }
        Value::Complex { re, im } => {
            put("real", float_json(*re));
            put("imag", float_json(*im));
            "complex"
        }
        Value::Bool(b) => {
            put("value", json!(b));
            "bool"
        }
        Value::String { bytes, len } => {
            put("value", json!(String::from_utf8_lossy(bytes)));
            put("len", json!(len));
            put("truncated", json!((bytes.len() as u64) < *len));
            "string"
        }
        Value::Pointer { addr, target } => {
            put("address", json!(hex(*addr)));
            put("target", to_json(target));
            "pointer"
        }
        Value::UnsafePointer(addr) => {
            put("address", json!(hex(*addr)));
            "unsafe_pointer"
        }
        Value::Func { entry, function } => {
            put("address", json!(hex(*entry)));
            put("function", json!(function));
            "func"
        }
        Value::Struct(fields) => {
            put(
                "fields",
                Json::Array(
                    fields
                        .iter()
                        .map(|(name, value)| json!({"name": name, "value": to_json(value)}))
                        .collect(),
                ),
            );
            "struct"
        }
        Value::Array { len, items } => {
            put("len", json!(len));
            put("items", Json::Array(items.iter().map(to_json).collect()));
            put("truncated", json!((items.len() as u64) < *len));
            "array"
        }
        Value::Slice {
            addr,
            len,
            cap,
            items,
        } => {
            put("address", json!(hex(*addr)));
            put("len", json!(len));
            put("cap", json!(cap));
            put("items", Json::Array(items.iter().map(to_json).collect()));
            put("truncated", json!((items.len() as u64) < *len));
            "slice"
        }
        Value::Map { addr, len, entries } => {
            put("address", json!(hex(*addr)));
            put("len", json!(len));
            put(
                "entries",
                Json::Array(
                    entries
                        .iter()
                        .map(|(k, v)| json!({"key": to_json(k), "value": to_json(v)}))
                        .collect(),
                ),
            );
            put("truncated", json!((entries.len() as u64) < *len));
            "map"
        }
        Value::Interface {
            dynamic_type,
            value,
        } => {
            put("dynamic_type", json!(dynamic_type));
            put("value", to_json(value));
            "interface"
        }
        Value::Chan {
            addr,
            elem_type,
            len,
            cap,
            closed,
            dir,
            items,
        } => {
            put("address", json!(hex(*addr)));
            put("elem_type", json!(elem_type));
            put("len", json!(len));
            put("cap", json!(cap));
            put("closed", json!(closed));
            put("dir", json!(dir));
            put("items", Json::Array(items.iter().map(to_json).collect()));
            put("truncated", json!((items.len() as u64) < *len));
            "chan"
        }
        Value::Nil => "nil",
        Value::Cycle { addr } => {
            put("address", json!(hex(*addr)));
            "cycle"
        }
        Value::Unreadable(reason) => {
            put("reason", json!(reason));
            "unreadable"
        }
        Value::Truncated(reason) => {
            put("reason", json!(reason));
            "truncated"
        }
    };
    m.insert("kind".into(), json!(kind));
    m.insert("type".into(), json!(v.type_name));
    Json::Object(m)
}

/// A float as a JSON number, or a string for what JSON cannot hold.
fn float_json(f: f64) -> Json {
    if f.is_nan() {
        json!("NaN")
    } else if f.is_infinite() {
        json!(if f > 0.0 { "+Inf" } else { "-Inf" })
    } else {
        json!(f)
    }
}

/// Appends `v` as Go-like text. `typed`: show the type name, as at the top
/// level and inside interfaces, where it is not implied by the context.
fn text(s: &mut String, v: &TypedValue, typed: bool) {
    let ty = v.type_name.as_str();
    match &v.value {
        Value::Int(i) => scalar(s, ty, typed, &i.to_string()),
        Value::Uint(u) => scalar(s, ty, typed, &u.to_string()),
        Value::Float(f) => scalar(s, ty, typed, &float_text(*f, ty)),
        Value::Complex { re, im } => {
            let (re, im) = (float_text(*re, ty), float_text(*im, ty));
            let sign = if im.starts_with(['-', '+']) { "" } else { "+" };
            scalar(s, ty, typed, &format!("({re}{sign}{im}i)"))
        }
        Value::Bool(b) => scalar(s, ty, typed, &b.to_string()),
        Value::String { bytes, len } => {
            let mut q = quote(bytes);
            if (bytes.len() as u64) < *len {
                let _ = write!(q, "...({len} bytes)");
            }
            if typed && ty != "string" {
                let _ = write!(s, "{ty}({q})");
            } else {
                s.push_str(&q);
            }
        }
        Value::Pointer { addr, target } => match &target.value {
            Value::Truncated(_) | Value::Unreadable(_) | Value::Cycle { .. } => {
                let _ = write!(s, "({ty})({addr:#x})");
                if let Value::Cycle { .. } = target.value {
                    s.push_str(" <cycle>");
                } else if let Value::Unreadable(r) = &target.value {
                    let _ = write!(s, " <unreadable: {r}>");
                }
            }
            _ => {
                s.push('&');
                text(s, target, true);
            }
        },
        Value::UnsafePointer(addr) => {
            let _ = write!(s, "{ty}({addr:#x})");
        }
        Value::Func { entry, function } => {
            let f = function.clone().unwrap_or_else(|| format!("{entry:#x}"));
            if typed {
                let _ = write!(s, "{ty}({f})");
            } else {
                s.push_str(&f);
            }
        }
        Value::Struct(fields) => {
            if typed {
                s.push_str(ty);
            }
            s.push('{');
            for (i, (name, value)) in fields.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{name}: ");
                text(s, value, false);
            }
            s.push('}');
        }
        Value::Array { len, items } => {
            if typed {
                s.push_str(ty);
            }
            list(s, items, *len);
        }
        Value::Slice {
            len, cap, items, ..
        } => {
            if typed {
                s.push_str(ty);
            }
            list(s, items, *len);
            if typed {
                let _ = write!(s, " (len {len}, cap {cap})");
            }
        }
        Value::Map { len, entries, .. } => {
            if typed {
                s.push_str(ty);
            }
            s.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                text(s, k, false);
                s.push_str(": ");
                text(s, v, false);
            }
            more(s, entries.len(), *len);
            s.push('}');
            if typed {
                let _ = write!(s, " (len {len})");
            }
        }
        Value::Interface { value, .. } => {
            if typed {
                let _ = write!(s, "{ty}(");
            }
            text(s, value, true);
            if typed {
                s.push(')');
            }
        }
        Value::Chan {
            len,
            cap,
            closed,
            items,
            ..
        } => {
            s.push_str(ty);
            list(s, items, *len);
            let _ = write!(
                s,
                " (len {len}, cap {cap}{})",
                if *closed { ", closed" } else { "" }
            );
        }
        Value::Nil => {
            if typed {
                if ty.starts_with('*') || ty.starts_with("func") || ty.starts_with("<-") {
                    let _ = write!(s, "({ty})(nil)");
                } else {
                    let _ = write!(s, "{ty}(nil)");
                }
            } else {
                s.push_str("nil");
            }
        }
        Value::Cycle { addr } => {
            let _ = write!(s, "<cycle: {addr:#x}>");
        }
        Value::Unreadable(reason) => {
            let _ = write!(s, "<unreadable: {reason}>");
        }
        Value::Truncated(reason) => {
            let _ = write!(s, "<not shown: {reason}>");
        }
    }
}

fn scalar(s: &mut String, ty: &str, typed: bool, value: &str) {
    if typed {
        let _ = write!(s, "{ty}({value})");
    } else {
        s.push_str(value);
    }
}

fn list(s: &mut String, items: &[TypedValue], len: u64) {
    s.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        text(s, item, false);
    }
    more(s, items.len(), len);
    s.push('}');
}

fn more(s: &mut String, shown: usize, len: u64) {
    if (shown as u64) < len {
        if shown > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "...+{} more", len - shown as u64);
    }
}

/// The shortest text that reads back as the same float32 or float64.
fn float_text(f: f64, ty: &str) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if ty == "float32" || ty == "complex64" {
        format!("{}", f as f32)
    } else {
        format!("{f}")
    }
}

/// Go-style double-quoted string: printable characters as they are,
/// escapes for quotes, backslashes and control characters, `\xNN` for
/// bytes that are not UTF-8.
fn quote(bytes: &[u8]) -> String {
    let mut q = String::with_capacity(bytes.len() + 2);
    q.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => q.push_str("\\\""),
                '\\' => q.push_str("\\\\"),
                '\n' => q.push_str("\\n"),
                '\t' => q.push_str("\\t"),
                '\r' => q.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(q, "\\u{:04x}", c as u32);
                }
                c => q.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(q, "\\x{b:02x}");
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tv(ty: &str, v: Value) -> TypedValue {
        TypedValue::new(ty, v)
    }

    fn line(v: TypedValue) -> String {
        let mut s = String::new();
        text(&mut s, &v, true);
        s
    }

    #[test]
    fn text_forms() {
        assert_eq!(line(tv("int64", Value::Int(42))), "int64(42)");
        assert_eq!(
            line(tv(
                "string",
                Value::String {
                    bytes: b"a\"b\t\xff".to_vec(),
                    len: 5
                }
            )),
            "\"a\\\"b\\t\\xff\""
        );
        let inner = tv(
            "main.Inner",
            Value::Struct(vec![
                ("A".into(), tv("int", Value::Int(7))),
                (
                    "B".into(),
                    tv(
                        "string",
                        Value::String {
                            bytes: b"x".to_vec(),
                            len: 3,
                        },
                    ),
                ),
            ]),
        );
        assert_eq!(
            line(tv(
                "*main.Inner",
                Value::Pointer {
                    addr: 0x10,
                    target: Box::new(inner)
                }
            )),
            "&main.Inner{A: 7, B: \"x\"...(3 bytes)}"
        );
        assert_eq!(line(tv("*main.Inner", Value::Nil)), "(*main.Inner)(nil)");
        assert_eq!(line(tv("[]int", Value::Nil)), "[]int(nil)");
        assert_eq!(
            line(tv(
                "[]int",
                Value::Slice {
                    addr: 1,
                    len: 3,
                    cap: 4,
                    items: vec![tv("int", Value::Int(1))]
                }
            )),
            "[]int{1, ...+2 more} (len 3, cap 4)"
        );
        assert_eq!(
            line(tv(
                "interface {}",
                Value::Interface {
                    dynamic_type: "int".into(),
                    value: Box::new(tv("int", Value::Int(5)))
                }
            )),
            "interface {}(int(5))"
        );
        assert_eq!(
            line(tv("float32", Value::Float(f64::from(1.1f32)))),
            "float32(1.1)"
        );
        assert_eq!(
            line(tv("complex128", Value::Complex { re: 1.5, im: -2.0 })),
            "complex128((1.5-2i))"
        );
    }

    #[test]
    fn json_forms() {
        let j = to_json(&tv("float64", Value::Float(f64::NAN)));
        assert_eq!(j["value"], "NaN");
        let j = to_json(&tv(
            "map[string]int",
            Value::Map {
                addr: 0x20,
                len: 2,
                entries: vec![(
                    tv(
                        "string",
                        Value::String {
                            bytes: b"k".to_vec(),
                            len: 1,
                        },
                    ),
                    tv("int", Value::Int(1)),
                )],
            },
        ));
        assert_eq!(j["kind"], "map");
        assert_eq!(j["address"], "0x20");
        assert_eq!(j["truncated"], true);
        assert_eq!(j["entries"][0]["key"]["value"], "k");
    }
}
