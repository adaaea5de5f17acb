//! jq programs over records, on top of jaq: compiled once when a stage is built, run on each record.
//!
//! The standard definitions of jaq-core, jaq-std and jaq-json are loaded, so `length`, `select`, `map`,
//! `has`, `test`, `ascii_upcase`, string interpolation and the like work as in jq.

use std::fmt;

use jaq_core::compile::Undefined;
use jaq_core::data::JustLut;
use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars};
use jaq_json::{Num, Val};
use serde::Deserialize;
use serde_json::Value;

/// jaq's filter over its own JSON values, with no data but the lookup table (no `input`/`inputs`).
type JaqFilter = jaq_core::Filter<JustLut<Val>>;

/// Most outputs one run may make: a program like `repeat(.)` would otherwise fill the memory.
pub const MAX_OUTPUTS: usize = 10_000;

/// A compiled jq program.
pub struct Jq {
    /// The text, for messages and `Debug`.
    program: String,
    /// The compiled filter. It holds only terms and function pointers (values are made per run), so it
    /// can be shared between threads; `assert_send_sync` below keeps that true across jaq upgrades.
    filter: JaqFilter,
}

// Processors are `Send + Sync` and hold a `Jq`: fail the build, not a stage, if jaq ever changes that.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Jq>();
};

impl fmt::Debug for Jq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jq")
            .field("program", &self.program)
            .finish_non_exhaustive()
    }
}

/// Compiles `program`.
///
/// # Errors
/// A syntax error or an undefined filter or variable, with what was expected or not found and where
/// (the character offset in `program`).
pub fn compile(program: &str) -> Result<Jq, String> {
    let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
    let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(
            &arena,
            File {
                code: program,
                path: (),
            },
        )
        .map_err(|errs| load_errors(program, errs))?;
    let filter = Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errs| compile_errors(program, errs))?;
    Ok(Jq {
        program: program.to_owned(),
        filter,
    })
}

impl Jq {
    /// The program's text.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Every output of the program on `input`.
    ///
    /// # Errors
    /// A jq runtime error (`error("x")`, `.a` on a number, ...), `halt`, or more than [`MAX_OUTPUTS`]
    /// outputs.
    pub fn run(&self, input: &Value) -> Result<Vec<Value>, String> {
        let mut out = Vec::new();
        self.each(input, |v| {
            if out.len() == MAX_OUTPUTS {
                return Err(format!("more than {MAX_OUTPUTS} outputs"));
            }
            out.push(v);
            Ok(true)
        })?;
        Ok(out)
    }

    /// Whether the first output on `input` is true in jq's sense (neither `false` nor `null`); a program
    /// without output is false. Later outputs are not computed.
    ///
    /// # Errors
    /// A jq runtime error before the first output.
    pub fn is_true(&self, input: &Value) -> Result<bool, String> {
        let mut truth = false;
        self.each_val(input, |v| {
            truth = !matches!(v, Val::Null | Val::Bool(false));
            Ok(false)
        })?;
        Ok(truth)
    }

    /// Runs on `input`, handing each output converted to JSON to `f` while it returns `Ok(true)`.
    fn each(&self, input: &Value, mut f: impl FnMut(Value) -> Result<bool, String>) -> Result<(), String> {
        self.each_val(input, |v| f(to_json(&v)))
    }

    /// Runs on `input`, handing each output to `f` while it returns `Ok(true)`.
    fn each_val(&self, input: &Value, mut f: impl FnMut(Val) -> Result<bool, String>) -> Result<(), String> {
        let input = Val::deserialize(input).map_err(|e| format!("cannot give the record to jq: {e}"))?;
        let ctx = Ctx::<JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        for out in self.filter.id.run((ctx, input)) {
            // Not `jaq_core::unwrap_valr`: it exits the process on `halt`.
            let v = out.map_err(|exn| match exn.get_err() {
                // A string given to `error` is the message itself: shown without JSON quotes.
                Ok(e) => match e.into_val() {
                    Val::TStr(s) | Val::BStr(s) => format!("jq error: {}", String::from_utf8_lossy(&s)),
                    other => format!("jq error: {other}"),
                },
                Err(exn) => match exn.get_halt() {
                    Ok(code) => format!("jq program halted (exit code {code})"),
                    Err(_) => "jq internal error (break or tail call escaped)".to_owned(),
                },
            })?;
            if !f(v)? {
                break;
            }
        }
        Ok(())
    }
}

/// jaq's value as JSON. What JSON cannot hold is mapped as jq prints it: NaN becomes `null`, infinities
/// the largest floats, byte strings text (invalid UTF-8 replaced), non-string object keys their JSON text.
fn to_json(v: &Val) -> Value {
    match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_to_json(n),
        Val::TStr(s) | Val::BStr(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        Val::Arr(a) => Value::Array(a.iter().map(to_json).collect()),
        Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(s).into_owned(),
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

fn num_to_json(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i),
        Num::Float(f) => float_to_json(*f),
        // Big integers and decimals (literals such as `1.5` are kept as text): as serde_json reads them,
        // an integer if it fits, else the nearest float.
        Num::BigInt(_) | Num::Dec(_) => {
            let text = n.to_string();
            text.parse::<serde_json::Number>()
                .map(Value::Number)
                .unwrap_or_else(|_| text.parse::<f64>().map_or(Value::Null, float_to_json))
        }
    }
}

/// A float as jq prints it: infinities as the largest finite floats, NaN as `null`.
fn float_to_json(f: f64) -> Value {
    let f = if f.is_infinite() { f64::MAX.copysign(f) } else { f };
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// The character offset at which `part`, a slice of `program`, starts (`None` if it is not one).
fn offset(program: &str, part: &str) -> Option<usize> {
    (part.as_ptr() as usize)
        .checked_sub(program.as_ptr() as usize)
        .filter(|&o| o <= program.len() && program.is_char_boundary(o))
        .map(|o| program[..o].chars().count())
}

/// Where `found` (a slice of `program`) starts and a short quote of it.
fn locate(program: &str, found: &str) -> String {
    let quote: String = found.chars().take(20).collect();
    let quote = if quote.is_empty() {
        "the end of the program".to_owned()
    } else {
        format!("`{quote}`")
    };
    match offset(program, found) {
        Some(o) => format!("at character {o}, found {quote}"),
        None => format!("found {quote}"),
    }
}

fn load_errors(program: &str, errs: load::Errors<&str, ()>) -> String {
    let mut msgs = Vec::new();
    for (_, e) in errs {
        match e {
            load::Error::Io(es) => {
                msgs.extend(
                    es.into_iter()
                        .map(|(path, e)| format!("cannot load module `{path}`: {e}")),
                );
            }
            load::Error::Lex(es) => {
                for (expect, found) in es {
                    let what = match expect {
                        // `as_str` panics on delimiters it does not know; name them ourselves.
                        load::lex::Expect::Delim(open) => format!("a closing match for `{open}`"),
                        other => other.as_str().to_owned(),
                    };
                    msgs.push(format!(
                        "syntax error: expected {what} {}",
                        locate(program, found)
                    ));
                }
            }
            load::Error::Parse(es) => {
                for (expect, found) in es {
                    msgs.push(format!(
                        "syntax error: expected {} {}",
                        expect.as_str(),
                        locate(program, found)
                    ));
                }
            }
        }
    }
    if msgs.is_empty() {
        msgs.push("invalid jq program".to_owned());
    }
    msgs.join("; ")
}

fn compile_errors(program: &str, errs: jaq_core::compile::Errors<&str, ()>) -> String {
    let mut msgs = Vec::new();
    for (_, es) in errs {
        for (name, undefined) in es {
            let what = match undefined {
                Undefined::Filter(arity) => format!("filter `{name}/{arity}`"),
                other => format!("{} `{name}`", other.as_str()),
            };
            msgs.push(match offset(program, name) {
                Some(o) => format!("undefined {what} at character {o}"),
                None => format!("undefined {what}"),
            });
        }
    }
    if msgs.is_empty() {
        msgs.push("invalid jq program".to_owned());
    }
    msgs.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn predicates() {
        let jq = compile(".amount > 0").unwrap();
        assert!(jq.is_true(&json!({"amount": 3})).unwrap());
        assert!(!jq.is_true(&json!({"amount": -3})).unwrap());
        // null > 0 is false in jq: null sorts before numbers.
        assert!(!jq.is_true(&json!({})).unwrap());
    }

    #[test]
    fn select_keeps_or_drops() {
        let jq = compile("select(.a)").unwrap();
        assert_eq!(jq.run(&json!({"a": 1})).unwrap(), vec![json!({"a": 1})]);
        assert_eq!(jq.run(&json!({"a": null})).unwrap(), Vec::<Value>::new());
        assert!(jq.is_true(&json!({"a": "x"})).unwrap());
        // No output at all is false.
        assert!(!jq.is_true(&json!({"a": false})).unwrap());
    }

    #[test]
    fn interpolation_and_std_filters() {
        let jq = compile(r#""\(.user) says \(.message | ascii_upcase) (\(.tags | length))""#).unwrap();
        let out = jq
            .run(&json!({"user": "ann", "message": "hi", "tags": ["a", "b"]}))
            .unwrap();
        assert_eq!(out, vec![json!("ann says HI (2)")]);

        let jq =
            compile(r#"[.xs | map(. * 2)[] | select(. > 2)], has("xs"), (.s | test("^ab+c$"))"#).unwrap();
        let out = jq.run(&json!({"xs": [1, 2, 3], "s": "abbc"})).unwrap();
        assert_eq!(out, vec![json!([4, 6]), json!(true), json!(true)]);
    }

    #[test]
    fn values_round_trip() {
        let jq = compile(".").unwrap();
        let v = json!({"s": "é", "n": -7, "f": 1.5, "big": 18446744073709551615u64, "a": [null, true, {}]});
        assert_eq!(jq.run(&v).unwrap(), vec![v]);
        let out = compile("1.5, infinite, nan, {a: 1} + {b: 2}")
            .unwrap()
            .run(&json!(null))
            .unwrap();
        assert_eq!(
            out,
            vec![json!(1.5), json!(f64::MAX), json!(null), json!({"a": 1, "b": 2})]
        );
    }

    #[test]
    fn several_outputs_in_order() {
        let out = compile(".items[] | {id: .}")
            .unwrap()
            .run(&json!({"items": [1, 2]}))
            .unwrap();
        assert_eq!(out, vec![json!({"id": 1}), json!({"id": 2})]);
    }

    #[test]
    fn syntax_errors_are_named() {
        let e = compile(".a | (").unwrap_err();
        assert!(e.contains("syntax error"), "{e}");
        let e = compile(".a ==").unwrap_err();
        assert!(e.contains("syntax error") && e.contains("term"), "{e}");
        let e = compile("nosuchfilter(1)").unwrap_err();
        assert!(e.contains("undefined filter `nosuchfilter/1`"), "{e}");
        let e = compile("$nope").unwrap_err();
        assert!(e.contains("undefined variable"), "{e}");
    }

    #[test]
    fn runtime_errors_are_errors() {
        let jq = compile(r#"error("x")"#).unwrap();
        assert_eq!(jq.run(&json!({})).unwrap_err(), "jq error: x");
        assert!(jq.is_true(&json!({})).is_err());
        let e = compile(".a.b").unwrap().run(&json!({"a": 5})).unwrap_err();
        assert!(e.contains("cannot index"), "{e}");
        // halt must not end the process.
        assert!(compile("halt").unwrap().run(&json!(1)).is_err());
    }

    #[test]
    fn is_true_stops_at_the_first_output() {
        // The error after the first output is never reached.
        let jq = compile(r#"true, error("later")"#).unwrap();
        assert!(jq.is_true(&json!(null)).unwrap());
        assert!(jq.run(&json!(null)).is_err());
    }

    #[test]
    fn endless_output_is_cut() {
        let e = compile("repeat(1)").unwrap().run(&json!(null)).unwrap_err();
        assert!(e.contains("outputs"), "{e}");
        assert!(compile("repeat(1)").unwrap().is_true(&json!(null)).unwrap());
    }
}
