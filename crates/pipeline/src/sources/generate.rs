//! The records of a `generate` source (and of `ferry propagate`): events taken from a file, at random or
//! in order, or records made from a template whose strings call fake-data generators.
//!
//! A template is any JSON value. A string that is exactly one call, `"{{int(1,100)}}"`, is replaced by
//! the call's typed value (a number here); calls inside text, `"INV-{{int(1000,9999)}}"`, are replaced
//! by their text. Generators: `uuid`, `name`, `first_name`, `last_name`, `email`, `phone`, `country`,
//! `region`, `city`, `company`, `word`, `sentence`, `lat`, `lng`, `bool`, `int(MIN,MAX)`,
//! `float(MIN,MAX)`, `choice(a|b|c)`, `now`, `date`, `timestamp_ms`, `seq`.
//!
//! Templates are parsed once ([`validate_template`] reports every problem with its JSON path), so making
//! a record cannot fail.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Number, Value};

use crate::config::{GenerateSourceConfig, Order};

/// Makes the records of one `generate` source: from a file's events or from a template.
#[derive(Debug)]
pub struct Generator {
    kind: Kind,
    // Owned rather than `rand::rng()` (thread-local, not `Send`), so a generator can live in a task.
    rng: StdRng,
}

#[derive(Debug)]
enum Kind {
    Events {
        events: Vec<Value>,
        order: Order,
        /// The next one in sequential order.
        next: usize,
    },
    Template {
        node: Node,
        /// Records made so far: `{{seq}}` of the next one is this plus one.
        made: u64,
    },
}

impl Generator {
    /// The generator of a `generate` source: `config.file` (read relative to `base_dir` unless
    /// absolute) or `config.template`.
    ///
    /// # Errors
    /// Both or neither of `file` and `template`; a file that cannot be read, is not JSON or holds no
    /// event (naming the file); a template with problems (all of them, as [`validate_template`] says).
    pub fn new(config: &GenerateSourceConfig, base_dir: &Path) -> Result<Self> {
        match (&config.file, &config.template) {
            (Some(file), None) => {
                // `join` keeps an absolute `file` as it is.
                let events = load_events(&base_dir.join(file))?;
                Ok(Self::from_events(events, config.order))
            }
            (None, Some(template)) => Self::from_template(template),
            (Some(_), Some(_)) => bail!("generate: give `file` or `template`, not both"),
            (None, None) => bail!("generate: give `file` (events to replay) or `template`"),
        }
    }

    /// A generator of `events`, taken in `order`. With no events at all, every record is `null` (a file
    /// is refused before that: see [`load_events`]).
    pub fn from_events(events: Vec<Value>, order: Order) -> Self {
        Self {
            kind: Kind::Events {
                events,
                order,
                next: 0,
            },
            rng: new_rng(),
        }
    }

    /// A generator of records made from `template`.
    ///
    /// # Errors
    /// The template's problems, all of them, as [`validate_template`] says.
    pub fn from_template(template: &Value) -> Result<Self> {
        let mut problems = Vec::new();
        let node = compile(template, &mut vec![], &mut problems);
        if !problems.is_empty() {
            let messages: Vec<String> = problems.into_iter().map(|(_, message)| message).collect();
            bail!("{}", messages.join("; "));
        }
        Ok(Self {
            kind: Kind::Template { node, made: 0 },
            rng: new_rng(),
        })
    }

    /// The next record: a file's event (uniformly at random, or the next one in file order, starting
    /// over after the last), or a new record from the template.
    pub fn next_event(&mut self) -> Value {
        match &mut self.kind {
            Kind::Events { events, order, next } => match order {
                Order::Random => events.choose(&mut self.rng).cloned().unwrap_or(Value::Null),
                Order::Sequential => {
                    let event = events.get(*next).cloned().unwrap_or(Value::Null);
                    *next = (*next + 1) % events.len().max(1);
                    event
                }
            },
            Kind::Template { node, made } => {
                *made += 1;
                let mut ctx = Ctx {
                    rng: &mut self.rng,
                    // One clock reading per record: `now`, `date` and `timestamp_ms` agree.
                    now: Utc::now(),
                    seq: *made,
                };
                node.render(&mut ctx)
            }
        }
    }
}

fn new_rng() -> StdRng {
    StdRng::from_rng(&mut rand::rng())
}

/// The events of a file: a JSON array of events, or one JSON event per line (JSON Lines; any
/// whitespace between values will do). A file holding a single array is that array's events.
///
/// # Errors
/// The file cannot be read, is not JSON (naming the line and column), or holds no event.
pub fn load_events(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read events file `{}`", path.display()))?;
    let mut values = Vec::new();
    for value in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
        let value = value.with_context(|| {
            format!(
                "events file `{}`: not a JSON array of events, nor one JSON event per line",
                path.display()
            )
        })?;
        values.push(value);
    }
    let events = match <[Value; 1]>::try_from(values) {
        Ok([Value::Array(events)]) => events,
        Ok([one]) => vec![one],
        Err(values) => values,
    };
    if events.is_empty() {
        bail!("events file `{}` holds no event", path.display());
    }
    Ok(events)
}

/// Every problem of a template, each as (`"template"`, message naming the JSON path, e.g.
/// `template.user.id`, and the unknown generator or bad arguments). Pure: used by `ferry check`.
pub fn validate_template(template: &Value) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    compile(template, &mut vec![], &mut problems);
    problems
}

// ---------------------------------------------------------------------------------------------------
// Templates, parsed

/// A template, parsed.
#[derive(Debug)]
enum Node {
    /// Copied as it is.
    Literal(Value),
    /// A string that is exactly one call: its typed value.
    Call(Call),
    /// A string with calls in text: the text with each call's text in its place.
    Text(Vec<Piece>),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

#[derive(Debug)]
enum Piece {
    Text(String),
    Call(Call),
}

/// One generator call.
#[derive(Debug)]
enum Call {
    Uuid,
    Name,
    FirstName,
    LastName,
    Email,
    Phone,
    Country,
    Region,
    City,
    Company,
    Word,
    Sentence,
    Lat,
    Lng,
    Bool,
    Int(i64, i64),
    Float(f64, f64),
    /// Each option as text and as the value it stands for alone (a number when it is one).
    Choice(Vec<(String, Value)>),
    Now,
    Date,
    TimestampMs,
    Seq,
}

/// The generators that take no arguments.
fn plain(name: &str) -> Option<Call> {
    Some(match name {
        "uuid" => Call::Uuid,
        "name" => Call::Name,
        "first_name" => Call::FirstName,
        "last_name" => Call::LastName,
        "email" => Call::Email,
        "phone" => Call::Phone,
        "country" => Call::Country,
        "region" => Call::Region,
        "city" => Call::City,
        "company" => Call::Company,
        "word" => Call::Word,
        "sentence" => Call::Sentence,
        "lat" => Call::Lat,
        "lng" => Call::Lng,
        "bool" => Call::Bool,
        "now" => Call::Now,
        "date" => Call::Date,
        "timestamp_ms" => Call::TimestampMs,
        "seq" => Call::Seq,
        _ => return None,
    })
}

/// Every generator, as named in messages.
const KNOWN: &str = "uuid, name, first_name, last_name, email, phone, country, region, city, company, word, \
                     sentence, lat, lng, bool, int(MIN,MAX), float(MIN,MAX), choice(a|b|c), now, date, \
                     timestamp_ms, seq";

/// One step of a JSON path.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `template.user.emails[0]`; a key that is not a plain name is quoted: `template["first name"]`.
fn path_text(path: &[Step<'_>]) -> String {
    let mut out = String::from("template");
    for step in path {
        match step {
            Step::Key(k) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                let _ = write!(out, ".{k}");
            }
            Step::Key(k) => {
                let _ = write!(out, "[{}]", Value::String((*k).to_owned()));
            }
            Step::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// Parses `value`; each problem is added to `problems` and its place becomes a literal.
fn compile<'a>(value: &'a Value, path: &mut Vec<Step<'a>>, problems: &mut Vec<(String, String)>) -> Node {
    match value {
        Value::String(s) => compile_string(s, path, problems),
        Value::Array(items) => {
            let mut nodes = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                path.push(Step::Index(i));
                nodes.push(compile(item, path, problems));
                path.pop();
            }
            Node::Array(nodes)
        }
        Value::Object(map) => {
            let mut fields = Vec::with_capacity(map.len());
            for (key, item) in map {
                path.push(Step::Key(key));
                fields.push((key.clone(), compile(item, path, problems)));
                path.pop();
            }
            Node::Object(fields)
        }
        other => Node::Literal(other.clone()),
    }
}

fn compile_string(s: &str, path: &[Step<'_>], problems: &mut Vec<(String, String)>) -> Node {
    let mut pieces = Vec::new();
    let mut rest = s;
    let mut ok = true;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(len) = after.find("}}") else {
            // A typo like `{{uuid}` would otherwise silently stay text.
            problems.push((
                "template".into(),
                format!(
                    "`{}`: `{{{{` without a closing `}}}}` in {:?}",
                    path_text(path),
                    s
                ),
            ));
            ok = false;
            break;
        };
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_owned()));
        }
        match parse_call(&after[..len]) {
            Ok(call) => pieces.push(Piece::Call(call)),
            Err(e) => {
                problems.push(("template".into(), format!("`{}`: {e}", path_text(path))));
                ok = false;
            }
        }
        rest = &after[len + 2..];
    }
    if !ok || !pieces.iter().any(|p| matches!(p, Piece::Call(_))) {
        return Node::Literal(Value::String(s.to_owned()));
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    if pieces.len() == 1
        && let Some(Piece::Call(call)) = pieces.pop()
    {
        return Node::Call(call);
    }
    Node::Text(pieces)
}

/// Parses what is between `{{` and `}}`: `name` or `name(args)`.
fn parse_call(text: &str) -> Result<Call, String> {
    let text = text.trim();
    let (name, args) = match text.split_once('(') {
        Some((name, rest)) => match rest.strip_suffix(')') {
            Some(args) => (name.trim(), Some(args)),
            None => return Err(format!("`{{{{{text}}}}}`: arguments must end with `)`")),
        },
        None => (text, None),
    };
    let args_given = args.is_some_and(|a| !a.trim().is_empty());
    if let Some(call) = plain(name) {
        if args_given {
            return Err(format!("`{{{{{text}}}}}`: `{name}` takes no arguments"));
        }
        return Ok(call);
    }
    match name {
        "int" => {
            let (min, max) = two_args(args, |a| a.parse::<i64>().ok())
                .ok_or_else(|| format!("`{{{{{text}}}}}`: expected two whole numbers, `int(MIN,MAX)`"))?;
            if min > max {
                return Err(format!("`{{{{{text}}}}}`: MIN {min} is more than MAX {max}"));
            }
            Ok(Call::Int(min, max))
        }
        "float" => {
            let (min, max) = two_args(args, |a| a.parse::<f64>().ok().filter(|x| x.is_finite()))
                .ok_or_else(|| format!("`{{{{{text}}}}}`: expected two numbers, `float(MIN,MAX)`"))?;
            if min > max {
                return Err(format!("`{{{{{text}}}}}`: MIN {min} is more than MAX {max}"));
            }
            // A range wider than the largest f64 cannot be sampled.
            if !(max - min).is_finite() {
                return Err(format!("`{{{{{text}}}}}`: the range is too wide"));
            }
            Ok(Call::Float(min, max))
        }
        "choice" => {
            let Some(args) = args.filter(|a| !a.trim().is_empty()) else {
                return Err(format!("`{{{{{text}}}}}`: expected options, `choice(a|b|c)`"));
            };
            let options = args
                .split('|')
                .map(|o| {
                    let o = o.trim();
                    // JSON number syntax, so `007` or `inf` stay text.
                    let typed = serde_json::from_str::<Number>(o)
                        .map_or_else(|_| Value::String(o.to_owned()), Value::Number);
                    (o.to_owned(), typed)
                })
                .collect();
            Ok(Call::Choice(options))
        }
        "" => Err(format!("`{{{{{text}}}}}`: no generator named (known: {KNOWN})")),
        _ => Err(format!(
            "unknown generator `{name}` in `{{{{{text}}}}}` (known: {KNOWN})"
        )),
    }
}

/// `MIN,MAX` parsed by `parse`; `None` when there are not exactly two that parse.
fn two_args<T>(args: Option<&str>, parse: impl Fn(&str) -> Option<T>) -> Option<(T, T)> {
    let (a, b) = args?.split_once(',')?;
    Some((parse(a.trim())?, parse(b.trim())?))
}

// ---------------------------------------------------------------------------------------------------
// Templates, rendered

/// What one record's calls share.
struct Ctx<'a> {
    rng: &'a mut StdRng,
    now: DateTime<Utc>,
    seq: u64,
}

impl Node {
    fn render(&self, ctx: &mut Ctx<'_>) -> Value {
        match self {
            Self::Literal(v) => v.clone(),
            Self::Call(call) => call.value(ctx),
            Self::Text(pieces) => {
                let mut out = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(t) => out.push_str(t),
                        Piece::Call(call) => out.push_str(&call.text(ctx)),
                    }
                }
                Value::String(out)
            }
            Self::Array(items) => Value::Array(items.iter().map(|n| n.render(ctx)).collect()),
            Self::Object(fields) => {
                let mut map = Map::new();
                for (k, n) in fields {
                    map.insert(k.clone(), n.render(ctx));
                }
                Value::Object(map)
            }
        }
    }
}

impl Call {
    /// The value standing alone in a string: typed.
    fn value(&self, ctx: &mut Ctx<'_>) -> Value {
        let rng = &mut *ctx.rng;
        match self {
            Self::Uuid => Value::String(uuid_v4(rng)),
            Self::Name => Value::String(format!("{} {}", pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES))),
            Self::FirstName => text(pick(rng, FIRST_NAMES)),
            Self::LastName => text(pick(rng, LAST_NAMES)),
            Self::Email => Value::String(email(rng)),
            Self::Phone => Value::String(format!(
                "+1-{}-555-{:04}",
                rng.random_range(200..=999),
                rng.random_range(0..=9999)
            )),
            Self::Country => text(pick(rng, COUNTRIES)),
            Self::Region => text(pick(rng, REGIONS)),
            Self::City => text(pick(rng, CITIES)),
            Self::Company => Value::String(format!(
                "{} {}",
                pick(rng, COMPANIES),
                pick(rng, COMPANY_SUFFIXES)
            )),
            Self::Word => text(pick(rng, WORDS)),
            Self::Sentence => Value::String(sentence(rng)),
            Self::Lat => float(round_to(rng.random_range(-90.0..=90.0), 6)),
            Self::Lng => float(round_to(rng.random_range(-180.0..=180.0), 6)),
            Self::Bool => Value::Bool(rng.random_bool(0.5)),
            Self::Int(min, max) => Value::from(rng.random_range(*min..=*max)),
            Self::Float(min, max) => float(round_to(rng.random_range(*min..=*max), 2)),
            Self::Choice(options) => options
                .choose(rng)
                .map_or(Value::Null, |(_, typed)| typed.clone()),
            Self::Now => Value::String(ctx.now.to_rfc3339_opts(SecondsFormat::Millis, true)),
            Self::Date => Value::String(ctx.now.format("%Y-%m-%d").to_string()),
            Self::TimestampMs => Value::from(ctx.now.timestamp_millis()),
            Self::Seq => Value::from(ctx.seq),
        }
    }

    /// The value inside text.
    fn text(&self, ctx: &mut Ctx<'_>) -> String {
        match self {
            // `12.30`, not `12.3`: text reads as an amount.
            Self::Float(min, max) => format!("{:.2}", ctx.rng.random_range(*min..=*max)),
            Self::Choice(options) => options
                .choose(&mut *ctx.rng)
                .map_or_else(String::new, |(o, _)| o.clone()),
            _ => match self.value(ctx) {
                Value::String(s) => s,
                other => other.to_string(),
            },
        }
    }
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

fn pick<'a>(rng: &mut StdRng, words: &[&'a str]) -> &'a str {
    words.choose(rng).copied().unwrap_or_default()
}

/// A random (version 4) UUID: `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`, `y` one of 8, 9, a, b.
fn uuid_v4(rng: &mut StdRng) -> String {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn email(rng: &mut StdRng) -> String {
    let first = pick(rng, FIRST_NAMES).to_lowercase();
    let last = pick(rng, LAST_NAMES).to_lowercase();
    // Reserved domains (RFC 2606): fake addresses never reach anyone.
    let domain = pick(rng, &["example.com", "example.org", "example.net"]);
    format!("{first}.{last}{}@{domain}", rng.random_range(1..=99))
}

fn sentence(rng: &mut StdRng) -> String {
    let n = rng.random_range(5..=12);
    let mut out = String::new();
    for i in 0..n {
        let word = pick(rng, WORDS);
        if i == 0 {
            let mut chars = word.chars();
            if let Some(c) = chars.next() {
                out.extend(c.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push(' ');
            out.push_str(word);
        }
    }
    out.push('.');
    out
}

const FIRST_NAMES: &[&str] = &[
    "Peter", "Jack", "Thomas", "Anna", "Maria", "James", "Olivia", "Liam", "Emma", "Noah", "Sofia", "Lucas",
    "Mia", "Elena", "David", "Sara", "Ivan", "Aiko", "Kenji", "Fatima", "Omar", "Priya", "Arjun", "Chen",
    "Lena", "Marco", "Julia", "Ines", "Hugo", "Nora",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Brown",
    "Garcia",
    "Miller",
    "Davis",
    "Martin",
    "Rossi",
    "Muller",
    "Dubois",
    "Kowalski",
    "Novak",
    "Silva",
    "Santos",
    "Tanaka",
    "Sato",
    "Kim",
    "Lee",
    "Wang",
    "Singh",
    "Patel",
    "Khan",
    "Ivanova",
    "Jensen",
    "Nielsen",
    "Andersson",
    "Murphy",
    "Walsh",
    "Costa",
    "Haddad",
];

const COUNTRIES: &[&str] = &[
    "United States",
    "Canada",
    "Mexico",
    "Brazil",
    "Argentina",
    "United Kingdom",
    "Ireland",
    "France",
    "Germany",
    "Spain",
    "Italy",
    "Portugal",
    "Netherlands",
    "Poland",
    "Sweden",
    "Norway",
    "Lithuania",
    "Japan",
    "South Korea",
    "China",
    "India",
    "Australia",
    "New Zealand",
    "South Africa",
    "Egypt",
    "Kenya",
];

const REGIONS: &[&str] = &[
    "North America",
    "South America",
    "Western Europe",
    "Eastern Europe",
    "Northern Europe",
    "Middle East",
    "Africa",
    "South Asia",
    "East Asia",
    "Oceania",
];

const CITIES: &[&str] = &[
    "New York",
    "Toronto",
    "Mexico City",
    "Sao Paulo",
    "Buenos Aires",
    "London",
    "Dublin",
    "Paris",
    "Berlin",
    "Madrid",
    "Rome",
    "Lisbon",
    "Amsterdam",
    "Warsaw",
    "Stockholm",
    "Oslo",
    "Vilnius",
    "Tokyo",
    "Seoul",
    "Shanghai",
    "Mumbai",
    "Sydney",
    "Auckland",
    "Cape Town",
    "Cairo",
    "Nairobi",
];

const COMPANIES: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Soylent",
    "Vandelay",
    "Cyberdyne",
    "Aperture",
    "Northwind",
    "Contoso",
    "Fabrikam",
    "Wonka",
    "Oscorp",
    "Gringotts",
];

const COMPANY_SUFFIXES: &[&str] = &["Inc", "LLC", "Ltd", "Corp", "GmbH", "Group", "Labs", "Industries"];

const WORDS: &[&str] = &[
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
    "et",
    "dolore",
    "magna",
    "aliqua",
    "enim",
    "ad",
    "minim",
    "veniam",
    "quis",
    "nostrud",
    "exercitation",
    "ullamco",
    "laboris",
    "nisi",
    "aliquip",
    "ex",
    "ea",
    "commodo",
    "consequat",
    "duis",
    "aute",
    "irure",
    "in",
    "voluptate",
    "velit",
    "esse",
    "cillum",
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::json;

    use super::*;
    use crate::config::Span;

    fn template(t: Value) -> Generator {
        Generator::from_template(&t).unwrap()
    }

    fn config(file: Option<&str>, template: Option<Value>, order: Order) -> GenerateSourceConfig {
        GenerateSourceConfig {
            file: file.map(Into::into),
            template,
            order,
            interval: Span::secs(1),
            count: None,
            topic: None,
        }
    }

    #[test]
    fn a_whole_string_call_is_replaced_by_its_typed_value() {
        let mut g = template(json!({
            "id": "{{uuid}}", "n": "{{int(1,5)}}", "x": "{{float(0,1)}}", "ok": "{{bool}}",
            "ts": "{{timestamp_ms}}", "lat": "{{lat}}", "lng": "{{ lng }}", "when": "{{now}}", "day": "{{date}}",
            "fixed": 7, "nested": [{"who": "{{name}}"}, "plain"]
        }));
        let v = g.next_event();
        let id = v["id"].as_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "{id}");
        assert!("89ab".contains(&id[19..20]), "{id}");
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{id}");
        assert!((1..=5).contains(&v["n"].as_i64().unwrap()));
        let x = v["x"].as_f64().unwrap();
        assert!(
            (0.0..=1.0).contains(&x) && (x * 100.0 - (x * 100.0).round()).abs() < 1e-9,
            "{x}"
        );
        assert!(v["ok"].is_boolean());
        assert!(v["ts"].as_i64().unwrap() > 1_600_000_000_000);
        assert!((-90.0..=90.0).contains(&v["lat"].as_f64().unwrap()));
        assert!((-180.0..=180.0).contains(&v["lng"].as_f64().unwrap()));
        let when = v["when"].as_str().unwrap();
        assert!(
            DateTime::parse_from_rfc3339(when).is_ok() && when.ends_with('Z'),
            "{when}"
        );
        assert_eq!(v["day"].as_str().unwrap(), &when[..10]);
        assert_eq!(v["fixed"], 7);
        assert_eq!(v["nested"][0]["who"].as_str().unwrap().split(' ').count(), 2);
        assert_eq!(v["nested"][1], "plain");
    }

    #[test]
    fn calls_inside_text_are_interpolated() {
        let mut g = template(json!({
            "invoice": "INV-{{int(1000,9999)}}", "mail": "to: {{email}}!", "amount": "{{float(1,2)}} EUR",
            "tag": "{{word}}-{{word}}", "n": "#{{seq}}"
        }));
        let v = g.next_event();
        let invoice = v["invoice"].as_str().unwrap();
        let n: i64 = invoice.strip_prefix("INV-").unwrap().parse().unwrap();
        assert!((1000..=9999).contains(&n));
        let mail = v["mail"].as_str().unwrap();
        assert!(
            mail.starts_with("to: ") && mail.ends_with('!') && mail.contains("@example."),
            "{mail}"
        );
        let amount = v["amount"].as_str().unwrap();
        assert!(
            amount.ends_with(" EUR") && amount.len() == "1.23 EUR".len(),
            "{amount}"
        );
        assert_eq!(v["tag"].as_str().unwrap().split('-').count(), 2);
        assert_eq!(v["n"], "#1");
    }

    #[test]
    fn int_stays_within_its_bounds() {
        let mut g = template(json!("{{int(-3,3)}}"));
        let seen: HashSet<i64> = (0..1000).map(|_| g.next_event().as_i64().unwrap()).collect();
        assert_eq!(seen, (-3..=3).collect::<HashSet<i64>>());
        let mut one = template(json!("{{int(7,7)}}"));
        assert_eq!(one.next_event(), 7);
    }

    #[test]
    fn choice_picks_an_option_typed_when_alone() {
        let mut g = template(
            json!({"c": "{{choice(red|green| blue)}}", "n": "{{choice(1|2.5)}}",
            "t": "n={{choice(1|2)}}", "s": "{{choice(007|x)}}"}),
        );
        for _ in 0..50 {
            let v = g.next_event();
            assert!(
                ["red", "green", "blue"].contains(&v["c"].as_str().unwrap()),
                "{v}"
            );
            assert!(v["n"] == json!(1) || v["n"] == json!(2.5), "{v}");
            assert!(v["t"] == "n=1" || v["t"] == "n=2", "{v}");
            assert!(v["s"] == "007" || v["s"] == "x", "{v}");
        }
    }

    #[test]
    fn seq_counts_records() {
        let mut g = template(json!({"a": "{{seq}}", "b": "{{seq}}"}));
        for i in 1..=3u64 {
            let v = g.next_event();
            assert_eq!(v, json!({"a": i, "b": i}));
        }
    }

    #[test]
    fn problems_name_the_generator_and_the_path() {
        let problems = validate_template(&json!({
            "user": {"id": "{{uuidd}}", "first name": ["ok", "{{int(5,1)}}"]},
            "a": "{{int(x,2)}}", "b": "{{uuid(3)}}", "c": "{{choice()}}", "d": "{{email}", "e": "{{float(0,1}}",
            "fine": "{{name}} {{seq}}"
        }));
        let messages: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
        assert!(problems.iter().all(|(k, _)| k == "template"));
        assert_eq!(messages.len(), 7, "{messages:#?}");
        let has = |path: &str, text: &str| {
            assert!(
                messages
                    .iter()
                    .any(|m| m.starts_with(&format!("`{path}`:")) && m.contains(text)),
                "no `{path}` problem with `{text}` in {messages:#?}"
            );
        };
        has("template.user.id", "unknown generator `uuidd`");
        has("template.user[\"first name\"][1]", "MIN 5 is more than MAX 1");
        has("template.a", "two whole numbers");
        has("template.b", "takes no arguments");
        has("template.c", "choice(a|b|c)");
        has("template.d", "without a closing");
        has("template.e", "must end with `)`");
        assert!(validate_template(&json!({"x": "{{ int( 1 , 2 ) }}", "y": [1, null, "text"]})).is_empty());
        let e = Generator::from_template(&json!("{{nope}}")).unwrap_err();
        assert!(e.to_string().contains("unknown generator `nope`"), "{e}");
    }

    #[test]
    fn sequential_order_starts_over_after_the_last() {
        let mut g = Generator::from_events(vec![json!(1), json!(2), json!(3)], Order::Sequential);
        let got: Vec<Value> = (0..7).map(|_| g.next_event()).collect();
        assert_eq!(got, [1, 2, 3, 1, 2, 3, 1].map(|n| json!(n)));
        let mut random = Generator::from_events(vec![json!("a"), json!("b")], Order::Random);
        let seen: HashSet<String> = (0..200).map(|_| random.next_event().to_string()).collect();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            Generator::from_events(vec![], Order::Sequential).next_event(),
            Value::Null
        );
    }

    #[test]
    fn files_hold_an_array_or_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), "[{\"n\": 1},\n {\"n\": 2}]\n").unwrap();
        std::fs::write(dir.path().join("l.jsonl"), "{\"n\": 1}\n\n{\"n\": 2}\n[3]\n").unwrap();
        std::fs::write(dir.path().join("one.jsonl"), "{\"n\": 1}\n").unwrap();
        std::fs::write(dir.path().join("empty.json"), "  \n").unwrap();
        std::fs::write(dir.path().join("bad.jsonl"), "{\"n\": 1}\n{oops\n").unwrap();

        let events = |name: &str, order| {
            let mut g = Generator::new(&config(Some(name), None, order), dir.path()).unwrap();
            (0..3).map(|_| g.next_event()).collect::<Vec<_>>()
        };
        assert_eq!(
            events("a.json", Order::Sequential),
            [json!({"n": 1}), json!({"n": 2}), json!({"n": 1})]
        );
        assert_eq!(
            events("l.jsonl", Order::Sequential),
            [json!({"n": 1}), json!({"n": 2}), json!([3])]
        );
        assert_eq!(events("one.jsonl", Order::Random), vec![json!({"n": 1}); 3]);
        // An absolute path is not joined to the base directory.
        let absolute = dir.path().join("a.json");
        let g = Generator::new(
            &config(absolute.to_str(), None, Order::Random),
            Path::new("/nowhere"),
        );
        assert!(g.is_ok());

        let err = |name: &str| {
            format!(
                "{:#}",
                Generator::new(&config(Some(name), None, Order::Random), dir.path()).unwrap_err()
            )
        };
        assert!(
            err("empty.json").contains("empty.json` holds no event"),
            "{}",
            err("empty.json")
        );
        assert!(
            err("bad.jsonl").contains("bad.jsonl") && err("bad.jsonl").contains("line 2"),
            "{}",
            err("bad.jsonl")
        );
        assert!(
            err("missing.json").contains("missing.json"),
            "{}",
            err("missing.json")
        );
        let both = Generator::new(
            &config(Some("a.json"), Some(json!({})), Order::Random),
            dir.path(),
        );
        assert!(both.is_err());
    }

    #[test]
    fn a_template_config_makes_records() {
        let c = config(
            None,
            Some(json!({"k": "{{company}}", "c": "{{country}}/{{region}}/{{city}}",
            "p": "{{phone}}", "s": "{{sentence}}", "f": "{{first_name}} {{last_name}}"})),
            Order::Random,
        );
        let v = Generator::new(&c, Path::new("")).unwrap().next_event();
        assert_eq!(v["c"].as_str().unwrap().split('/').count(), 3);
        assert!(v["p"].as_str().unwrap().starts_with("+1-"));
        assert!(v["s"].as_str().unwrap().ends_with('.'));
        assert!(v["k"].as_str().unwrap().contains(' '));
    }
}
