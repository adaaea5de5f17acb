//! The README's "Pipeline reference" checked against the code, so that the two cannot drift apart.
//!
//! The section between `<!-- pipeline-reference:start -->` and `<!-- pipeline-reference:end -->` has one
//! subsection per component, `### source|processor|sink `kind``, each with a table `| key | default |
//! meaning |`. Checked here:
//! - every kind of `SourceConfig::KINDS`, `ProcessorConfig::KINDS` and `SinkConfig::KINDS` has exactly
//!   one subsection, and no subsection names a kind the code does not have;
//! - a table's keys are exactly the keys of the component's config struct, as the struct serializes them
//!   (a minimal valid stage of each kind is read with `parse_pipelines`, which picks the struct, and the
//!   config is serialized: every field is serialized, an unset option as `null`). A key whose default is
//!   a struct (`response`) has its keys listed as dotted rows (`response.status`);
//! - every default is the code's: `required` when serde refuses to do without the key, `none` when it
//!   is an unset option, otherwise a TOML value that, given explicitly, yields the same config as
//!   leaving the key out (so `"60s"` matches a default of 60 seconds however it serializes);
//! - the keys every stage has (`type`, `name`, `retry.*`) and `RetryConfig`'s defaults;
//! - the template generators listed are exactly the code's;
//! - every ```toml block of the section parses with `parse_pipelines` (after `${VAR:-default}`
//!   interpolation with no variable set).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use ferry_pipeline::check::{interpolate, parse_pipelines};
use ferry_pipeline::config::{PipelineConfig, ProcessorConfig, RetryConfig, SinkConfig, SourceConfig};
use ferry_pipeline::sources::generate::validate_template;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const START: &str = "<!-- pipeline-reference:start -->";
const END: &str = "<!-- pipeline-reference:end -->";
const ROLES: [&str; 3] = ["source", "processor", "sink"];

/// One line of the section, with its line number in README.md.
#[derive(Debug, Clone)]
struct Line {
    number: usize,
    text: String,
}

/// One row of a key table.
#[derive(Debug, Clone)]
struct Row {
    key: String,
    default: String,
    line: usize,
}

/// One `### role `kind`` subsection.
#[derive(Debug)]
struct Component {
    role: String,
    kind: String,
    line: usize,
    /// The rows of its key table (none when it has no table).
    rows: Vec<Row>,
    body: Vec<Line>,
}

/// The section as lines, and its intro (what comes before the first `###`).
#[derive(Debug)]
struct Section {
    intro: Vec<Line>,
    components: Vec<Component>,
    /// `###` headings that name a role with something that is not `` `kind` ``.
    malformed: Vec<String>,
    all: Vec<Line>,
}

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn section_of(text: &str) -> Section {
    let mut lines = Vec::new();
    let mut inside = false;
    let mut seen = (false, false);
    for (i, line) in text.lines().enumerate() {
        if line.trim() == START {
            assert!(!seen.0, "README.md: `{START}` appears twice");
            seen.0 = true;
            inside = true;
            continue;
        }
        if line.trim() == END {
            assert!(inside, "README.md: `{END}` before `{START}`");
            seen.1 = true;
            inside = false;
            continue;
        }
        if inside {
            lines.push(Line {
                number: i + 1,
                text: line.to_owned(),
            });
        }
    }
    assert!(
        seen.0 && seen.1,
        "README.md must hold the markers `{START}` and `{END}`"
    );
    assert!(
        lines.iter().any(|l| l.text.trim() == "## Pipeline reference"),
        "README.md: the reference section has no `## Pipeline reference` heading"
    );

    let mut intro = Vec::new();
    let mut components: Vec<Component> = Vec::new();
    let mut malformed = Vec::new();
    let mut in_component = false;
    for line in &lines {
        if let Some(heading) = line.text.strip_prefix("### ") {
            let heading = heading.trim();
            let (role, rest) = heading.split_once(' ').unwrap_or((heading, ""));
            if ROLES.contains(&role) {
                match rest.trim().strip_prefix('`').and_then(|r| r.strip_suffix('`')) {
                    Some(kind) if !kind.contains('`') => {
                        components.push(Component {
                            role: role.to_owned(),
                            kind: kind.to_owned(),
                            line: line.number,
                            rows: Vec::new(),
                            body: Vec::new(),
                        });
                        in_component = true;
                        continue;
                    }
                    _ => malformed.push(format!(
                        "README.md:{}: `### {heading}`: expected `### {role} `kind``",
                        line.number
                    )),
                }
            }
            // Another kind of subsection ends the component before it.
            in_component = false;
            continue;
        }
        match components.last_mut() {
            Some(c) if in_component => c.body.push(line.clone()),
            Some(_) => {}
            None => intro.push(line.clone()),
        }
    }
    for c in &mut components {
        c.rows = key_table(&c.body);
    }
    Section {
        intro,
        components,
        malformed,
        all: lines,
    }
}

/// The cells of a table row: split at `|` not escaped as `\|`, trimmed.
fn cells(line: &str) -> Vec<String> {
    let line = line.trim();
    let inner = line.strip_prefix('|').unwrap_or(line);
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut out = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                out.last_mut().unwrap().push('|');
            }
            '|' => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out.iter().map(|c| c.trim().to_owned()).collect()
}

/// A cell without its code-span backticks: `` `a` `` and ``` `` a `` ``` give `a`.
fn unquote(cell: &str) -> String {
    let cell = cell.trim();
    let ticks = cell.chars().take_while(|&c| c == '`').count();
    if ticks > 0 && cell.len() > 2 * ticks && cell.ends_with(&"`".repeat(ticks)) {
        cell[ticks..cell.len() - ticks].trim().to_owned()
    } else {
        cell.to_owned()
    }
}

/// The rows of the first `| key | default | meaning |` table in `lines`.
fn key_table(lines: &[Line]) -> Vec<Row> {
    let Some(start) = lines
        .iter()
        .position(|l| l.text.trim().starts_with('|') && cells(&l.text) == ["key", "default", "meaning"])
    else {
        return Vec::new();
    };
    lines[start + 1..]
        .iter()
        .take_while(|l| l.text.trim().starts_with('|'))
        .filter(|l| {
            !cells(&l.text)
                .iter()
                .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':')))
        })
        .map(|l| {
            let c = cells(&l.text);
            Row {
                key: unquote(c.first().map_or("", String::as_str)),
                default: unquote(c.get(1).map_or("", String::as_str)),
                line: l.number,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// What the code says

/// The keys of a minimal valid stage of each kind, besides `type` (only what the code requires, or what
/// its validation needs: a `filter` needs `stop_words` or `jq`).
fn minimal(role: &str, kind: &str) -> Option<&'static str> {
    Some(match (role, kind) {
        ("source", "http") => r#"path = "/x""#,
        ("source", "topic") => r#"topic = "in""#,
        ("source", "generate") => r#"template = { n = "{{seq}}" }"#,
        ("source", "rabbitmq") => r#"url = "amqp://127.0.0.1", queue = "q""#,
        ("source", "nats") => r#"url = "nats://127.0.0.1:4222", subject = "s""#,
        ("processor", "filter") => r#"jq = "true""#,
        ("processor", "map") => "",
        ("processor", "validate") => r#"schema = { type = "object" }"#,
        ("processor", "route") => r#"routes = [{ topic = "out", jq = "true" }]"#,
        ("sink", "email") => r#"from = "a@example.com", to = ["b@example.com"]"#,
        ("sink", "file") => r#"path = "out.jsonl""#,
        ("sink", "object_store") => "",
        ("sink", "http") => r#"url = "http://127.0.0.1:9/hook""#,
        ("sink", "topic") => r#"topic = "out""#,
        ("sink", "stdout") => "",
        ("sink", "rabbitmq") => r#"url = "amqp://127.0.0.1", routing_key = "k""#,
        ("sink", "nats") => r#"url = "nats://127.0.0.1:4222", subject = "s""#,
        _ => return None,
    })
}

fn inline(kind: &str, keys: &str) -> String {
    if keys.is_empty() {
        format!(r#"{{ type = "{kind}" }}"#)
    } else {
        format!(r#"{{ type = "{kind}", {keys} }}"#)
    }
}

/// A pipeline holding one stage of `role` and `kind` with `keys`, read as the code reads it.
fn pipeline_with(role: &str, kind: &str, keys: &str) -> PipelineConfig {
    let stage = inline(kind, keys);
    let text = match role {
        "source" => format!("[pipelines.t]\nsource = {stage}\n"),
        "processor" => {
            format!(
                "[pipelines.t]\nsource = {{ type = \"topic\", topic = \"in\" }}\nprocessors = [{stage}]\n"
            )
        }
        _ => format!("[pipelines.t]\nsource = {{ type = \"topic\", topic = \"in\" }}\nsinks = [{stage}]\n"),
    };
    let mut pipelines = parse_pipelines(&text).unwrap_or_else(|d| {
        let list: Vec<String> = d.iter().map(ToString::to_string).collect();
        panic!(
            "the minimal {role} `{kind}` of this test is refused by the code:\n{text}\n{}",
            list.join("\n")
        )
    });
    assert_eq!(pipelines.len(), 1);
    pipelines.remove(0)
}

/// A TOML table from the inside of an inline table.
fn table(keys: &str) -> toml::Table {
    let mut doc: toml::Table = toml::from_str(&format!("t = {{ {keys} }}")).unwrap();
    match doc.remove("t") {
        Some(toml::Value::Table(t)) => t,
        other => panic!("not a table: {other:?}"),
    }
}

/// A README default cell as a TOML value.
fn toml_value(cell: &str) -> Result<toml::Value, String> {
    let mut doc: toml::Table =
        toml::from_str(&format!("v = {cell}")).map_err(|e| format!("not a TOML value: {}", e.message()))?;
    Ok(doc.remove("v").unwrap())
}

fn without(mut t: toml::Table, path: &[&str]) -> toml::Table {
    match path {
        [] => {}
        [last] => {
            t.remove(*last);
        }
        [first, rest @ ..] => {
            if let Some(toml::Value::Table(inner)) = t.remove(*first) {
                t.insert((*first).to_owned(), toml::Value::Table(without(inner, rest)));
            }
        }
    }
    t
}

fn with(mut t: toml::Table, path: &[&str], value: toml::Value) -> toml::Table {
    match path {
        [] => {}
        [last] => {
            t.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let inner = match t.remove(*first) {
                Some(toml::Value::Table(inner)) => inner,
                _ => toml::Table::new(),
            };
            t.insert((*first).to_owned(), toml::Value::Table(with(inner, rest, value)));
        }
    }
    t
}

fn lookup<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// The config `T` reads from `t`, serialized; `Ok(None)` when serde says the key at `path` is missing.
fn read<T: Serialize + DeserializeOwned>(t: toml::Table, path: &[&str]) -> Result<Option<Value>, String> {
    match toml::Value::Table(t).try_into::<T>() {
        Ok(c) => Ok(Some(serde_json::to_value(&c).map_err(|e| e.to_string())?)),
        Err(e)
            if path
                .last()
                .is_some_and(|k| e.message().contains(&format!("missing field `{k}`"))) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.message().trim().to_owned()),
    }
}

fn show(v: &Value) -> String {
    v.to_string()
}

/// Compares the rows of `component` with the struct `T` (of which `config` is the minimal one read from
/// `minimal`); pushes every difference to `errors`.
fn compare<T: Serialize + DeserializeOwned>(
    component: &str,
    config: &T,
    minimal: &toml::Table,
    rows: &[Row],
    errors: &mut Vec<String>,
) {
    let code = serde_json::to_value(config).unwrap();
    let Value::Object(code) = &code else {
        errors.push(format!(
            "{component}: its config does not serialize as an object: {code}"
        ));
        return;
    };

    // Keys: the struct's fields, and the fields of those whose default is a struct.
    let mut expected: BTreeSet<String> = code.keys().cloned().collect();
    let mut structs = BTreeSet::new();
    for (k, v) in code {
        if let Value::Object(inner) = v
            && !inner.is_empty()
            && !minimal.contains_key(k)
        {
            structs.insert(k.clone());
            expected.extend(inner.keys().map(|sub| format!("{k}.{sub}")));
        }
    }
    let mut documented = BTreeMap::new();
    for row in rows {
        if documented.insert(row.key.clone(), row).is_some() {
            errors.push(format!(
                "README.md:{}: {component}: key `{}` is listed twice",
                row.line, row.key
            ));
        }
    }
    let listed: BTreeSet<String> = documented.keys().cloned().collect();
    for missing in expected.difference(&listed) {
        errors.push(format!(
            "{component}: the code has the key `{missing}`, the README's table does not list it"
        ));
    }
    for unknown in listed.difference(&expected) {
        errors.push(format!(
            "README.md:{}: {component}: the README lists `{unknown}`, the code has no such key",
            documented[unknown].line
        ));
    }

    // Defaults.
    for row in rows.iter().filter(|r| expected.contains(&r.key)) {
        let path: Vec<&str> = row.key.split('.').collect();
        let at = format!("README.md:{}: {component}: `{}`", row.line, row.key);
        let default = match read::<T>(without(minimal.clone(), &path), &path) {
            Ok(Some(v)) => v,
            Ok(None) => {
                if row.default != "required" {
                    errors.push(format!(
                        "{at}: the README says `{}`, the code requires the key (write `required`)",
                        row.default
                    ));
                }
                continue;
            }
            Err(e) => {
                errors.push(format!("{at}: the config cannot be read without it: {e}"));
                continue;
            }
        };
        let Some(code_default) = lookup(&default, &path) else {
            errors.push(format!("{at}: not in the serialized config {default}"));
            continue;
        };
        match row.default.as_str() {
            "required" => errors.push(format!(
                "{at}: the README says `required`, the code's default is {}",
                show(code_default)
            )),
            "none" => {
                if !code_default.is_null() {
                    errors.push(format!(
                        "{at}: the README says none, the code's default is {}",
                        show(code_default)
                    ));
                }
            }
            "—" | "-" => {
                if !structs.contains(&row.key) {
                    errors.push(format!(
                        "{at}: the README gives no default, the code's is {}",
                        show(code_default)
                    ));
                }
            }
            cell => match toml_value(cell) {
                Err(e) => errors.push(format!("{at}: the README's default `{cell}`: {e}")),
                Ok(value) => match read::<T>(with(minimal.clone(), &path, value), &path) {
                    Ok(Some(given)) if given == default => {}
                    Ok(_) => errors.push(format!(
                        "{at}: the README's default is `{cell}`, the code's is {}",
                        show(code_default)
                    )),
                    Err(e) => errors.push(format!(
                        "{at}: the README's default `{cell}` is not a valid value: {e} (the code's is {})",
                        show(code_default)
                    )),
                },
            },
        }
    }
}

/// Checks one component's rows against its struct, found by reading a minimal stage of its kind.
fn check_component(role: &str, kind: &str, rows: &[Row], errors: &mut Vec<String>) {
    let name = format!("{role} `{kind}`");
    let Some(keys) = minimal(role, kind) else {
        errors.push(format!(
            "{name}: this test has no minimal config for it: add one to `minimal` in tests/reference.rs"
        ));
        return;
    };
    let p = pipeline_with(role, kind, keys);
    let minimal = table(keys);
    match role {
        "source" => {
            let c = &p.source.component;
            assert_eq!(c.kind(), kind, "{name}: read as a source `{}`", c.kind());
            match c {
                SourceConfig::Http(c) => compare(&name, c, &minimal, rows, errors),
                SourceConfig::Topic(c) => compare(&name, c, &minimal, rows, errors),
                SourceConfig::Generate(c) => compare(&name, c, &minimal, rows, errors),
                SourceConfig::RabbitMq(c) => compare(&name, c, &minimal, rows, errors),
                SourceConfig::Nats(c) => compare(&name, c, &minimal, rows, errors),
            }
        }
        "processor" => {
            let c = &p.processors[0].component;
            assert_eq!(c.kind(), kind, "{name}: read as a processor `{}`", c.kind());
            match c {
                ProcessorConfig::Filter(c) => compare(&name, c, &minimal, rows, errors),
                ProcessorConfig::Map(c) => compare(&name, c, &minimal, rows, errors),
                ProcessorConfig::Validate(c) => compare(&name, c, &minimal, rows, errors),
                ProcessorConfig::Route(c) => compare(&name, c, &minimal, rows, errors),
            }
        }
        _ => {
            let c = &p.sinks[0].component;
            assert_eq!(c.kind(), kind, "{name}: read as a sink `{}`", c.kind());
            match c {
                SinkConfig::Email(c) => compare(&name, c, &minimal, rows, errors),
                SinkConfig::File(c) => compare(&name, c, &minimal, rows, errors),
                SinkConfig::ObjectStore(c) => compare(&name, c, &minimal, rows, errors),
                SinkConfig::Http(c) => compare(&name, c, &minimal, rows, errors),
                SinkConfig::Topic(c) => compare(&name, c, &minimal, rows, errors),
                SinkConfig::Stdout(c) => compare(&name, c, &minimal, rows, errors),
                SinkConfig::RabbitMq(c) => compare(&name, c, &minimal, rows, errors),
                SinkConfig::Nats(c) => compare(&name, c, &minimal, rows, errors),
            }
        }
    }
}

fn kinds(role: &str) -> &'static [&'static str] {
    match role {
        "source" => SourceConfig::KINDS,
        "processor" => ProcessorConfig::KINDS,
        _ => SinkConfig::KINDS,
    }
}

fn fail_on(errors: &[String]) {
    assert!(
        errors.is_empty(),
        "the README's pipeline reference and the code disagree:\n- {}",
        errors.join("\n- ")
    );
}

// ---------------------------------------------------------------------------------------------------
// Checks

fn kind_errors(s: &Section) -> Vec<String> {
    let mut errors = s.malformed.clone();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for c in &s.components {
        if let Some(first) = seen.insert((c.role.clone(), c.kind.clone()), c.line) {
            errors.push(format!(
                "README.md:{}: `### {} `{}`` again (first at line {first})",
                c.line, c.role, c.kind
            ));
        }
        if !kinds(&c.role).contains(&c.kind.as_str()) {
            errors.push(format!(
                "README.md:{}: `### {} `{}``: the code has no {} of that type (it has {})",
                c.line,
                c.role,
                c.kind,
                c.role,
                kinds(&c.role).join(", ")
            ));
        }
    }
    for role in ROLES {
        for kind in kinds(role) {
            if !seen.contains_key(&(role.to_owned(), (*kind).to_owned())) {
                errors.push(format!("{role} `{kind}` has no `### {role} `{kind}`` subsection"));
            }
        }
    }
    errors
}

fn key_errors(s: &Section) -> Vec<String> {
    let mut errors = Vec::new();
    for c in &s.components {
        if kinds(&c.role).contains(&c.kind.as_str()) {
            check_component(&c.role, &c.kind, &c.rows, &mut errors);
        }
    }
    errors
}

fn common_key_errors(s: &Section) -> Vec<String> {
    let rows = key_table(&s.intro);
    let mut errors = Vec::new();
    let common: BTreeSet<&str> = rows
        .iter()
        .map(|r| r.key.as_str())
        .filter(|k| !k.starts_with("retry."))
        .collect();
    let expected: BTreeSet<&str> = ["type", "name", "retry"].into();
    if common != expected {
        errors.push(format!(
            "the intro's key table lists {common:?}, every stage has {expected:?}"
        ));
    }
    // The retry keys, read the way check.rs reads them.
    let retry: Vec<Row> = rows
        .iter()
        .filter_map(|r| {
            r.key.strip_prefix("retry.").map(|k| Row {
                key: k.to_owned(),
                ..r.clone()
            })
        })
        .collect();
    let p = pipeline_with("source", "topic", r#"topic = "in""#);
    assert_eq!(p.retry, RetryConfig::default());
    compare("retry", &p.retry, &toml::Table::new(), &retry, &mut errors);
    errors
}

fn generator_errors(s: &Section) -> Vec<String> {
    let generate = s
        .components
        .iter()
        .find(|c| c.role == "source" && c.kind == "generate")
        .expect("a `### source `generate`` subsection");
    // The generator table: the first table after the key table whose header starts with `generator`.
    let start = generate
        .body
        .iter()
        .position(|l| {
            l.text.trim().starts_with('|') && cells(&l.text).first().is_some_and(|c| c == "generator")
        })
        .expect("a `| generator | value |` table in `### source `generate``");
    let mut documented = BTreeSet::new();
    for line in generate.body[start + 2..]
        .iter()
        .take_while(|l| l.text.trim().starts_with('|'))
    {
        let first = cells(&line.text).into_iter().next().unwrap_or_default();
        for name in first.split(", ") {
            documented.insert(unquote(name));
        }
    }
    // The code's list, as its message for an unknown generator gives it.
    let problems = validate_template(&Value::String("{{no_such_generator}}".into()));
    let message = &problems.first().expect("an unknown generator is a problem").1;
    let known = message
        .split_once("(known: ")
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no list of generators in {message:?}"));
    let code: BTreeSet<String> = known.split(", ").map(str::to_owned).collect();
    let mut errors = Vec::new();
    for g in code.difference(&documented) {
        errors.push(format!(
            "source `generate`: the generator `{g}` is not in the README"
        ));
    }
    for g in documented.difference(&code) {
        errors.push(format!(
            "source `generate`: the README lists the generator `{g}`, the code has none such"
        ));
    }
    // Each one documented is accepted with the arguments its name shows.
    for g in &documented {
        let call = g.replace("MIN,MAX", "1,2");
        let problems = validate_template(&Value::String(format!("{{{{{call}}}}}")));
        if !problems.is_empty() {
            errors.push(format!(
                "source `generate`: `{{{{{call}}}}}` is refused: {problems:?}"
            ));
        }
    }
    errors
}

fn example_errors(s: &Section) -> Vec<String> {
    let mut errors = Vec::new();
    let mut blocks = 0;
    let mut block: Option<(usize, String)> = None;
    for line in &s.all {
        let t = line.text.trim();
        match &mut block {
            None if t == "```toml" => block = Some((line.number, String::new())),
            None => {}
            Some(_) if t == "```" => {
                let (start, text) = block.take().unwrap();
                blocks += 1;
                let text = match interpolate(&text, |_| None) {
                    Ok(t) => t,
                    Err(d) => {
                        errors.push(format!("README.md:{start}: the ```toml block: {d:?}"));
                        continue;
                    }
                };
                match parse_pipelines(&text) {
                    Ok(p) if !p.is_empty() => {}
                    Ok(_) => errors.push(format!("README.md:{start}: the ```toml block holds no pipeline")),
                    Err(d) => {
                        for d in d {
                            errors.push(format!(
                                "README.md:{}: {}",
                                start + d.line,
                                d.to_string()
                                    .split_once(": ")
                                    .map_or(d.to_string(), |(_, m)| m.to_owned())
                            ));
                        }
                    }
                }
            }
            Some((_, text)) => {
                text.push_str(&line.text);
                text.push('\n');
            }
        }
    }
    if blocks == 0 {
        errors.push("the reference has no ```toml example".into());
    }
    errors
}

// ---------------------------------------------------------------------------------------------------
// Tests

#[test]
fn every_kind_has_one_subsection_and_no_other() {
    fail_on(&kind_errors(&section_of(&readme())));
}

#[test]
fn key_tables_list_every_key_with_the_code_default() {
    fail_on(&key_errors(&section_of(&readme())));
}

#[test]
fn keys_every_stage_has_match_the_code() {
    fail_on(&common_key_errors(&section_of(&readme())));
}

#[test]
fn template_generators_are_the_codes() {
    fail_on(&generator_errors(&section_of(&readme())));
}

#[test]
fn toml_examples_parse() {
    fail_on(&example_errors(&section_of(&readme())));
}

/// The checks themselves: each drift, made in a copy of the README, is reported, naming what drifted.
#[test]
fn drift_is_reported() {
    let text = readme();
    type Check = fn(&Section) -> Vec<String>;
    let cases: &[(&str, &str, Check, &[&str])] = &[
        (
            "| `timeout` | `\"30s\"` | longest an SMTP",
            "| `timeout` | `\"31s\"` | longest an SMTP",
            key_errors,
            &["sink `email`: `timeout`", "\"31s\"", "\"30s\""],
        ),
        (
            "| `max_age` | `\"60s\"` |",
            "| `max_age` | `\"61s\"` |",
            key_errors,
            &["sink `object_store`: `max_age`"],
        ),
        (
            "| `gzip` | `false` |",
            "| `gzipped` | `false` |",
            key_errors,
            &[
                "sink `object_store`: the code has the key `gzip`",
                "sink `object_store`: the README lists `gzipped`",
            ],
        ),
        (
            "| `match` | `\"substring\"` |",
            "| `match_mode` | `\"substring\"` |",
            key_errors,
            &["processor `filter`: the code has the key `match`"],
        ),
        (
            "| `from` | required |",
            "| `from` | none |",
            key_errors,
            &["sink `email`: `from`: the README says `none`, the code requires the key"],
        ),
        (
            "| `count` | none |",
            "| `count` | `5` |",
            key_errors,
            &["source `generate`: `count`: the README's default is `5`, the code's is null"],
        ),
        (
            "| `fsync` | `true` |",
            "| `fsync` | `false` |",
            key_errors,
            &["sink `file`: `fsync`"],
        ),
        (
            "| `response.status` | `200` |",
            "| `response.status` | `201` |",
            key_errors,
            &["source `http`: `response.status`"],
        ),
        (
            "| `response.body` | none |",
            "| `response.bodies` | none |",
            key_errors,
            &["source `http`: the code has the key `response.body`"],
        ),
        (
            "| `max_body_bytes` | `1048576` |",
            "| `max_body_bytes` | `\"1MB\"` |",
            key_errors,
            &["source `http`: `max_body_bytes`: the README's default `\"1MB\"` is not a valid value"],
        ),
        (
            "| `retry.max_attempts` | `10` |",
            "| `retry.max_attempts` | `9` |",
            common_key_errors,
            &["retry: `max_attempts`"],
        ),
        (
            "### sink `stdout`",
            "### sink `kafka`",
            kind_errors,
            &["sink `stdout` has no", "`### sink `kafka``: the code has no sink"],
        ),
        (
            "| `seq` |",
            "| `sequence` |",
            generator_errors,
            &[
                "the generator `seq` is not in the README",
                "the README lists the generator `sequence`",
            ],
        ),
        (
            "stop_words = [\"mango\"]",
            "stop_wordz = [\"mango\"]",
            example_errors,
            &["stop_wordz"],
        ),
    ];
    for (from, to, check, expected) in cases {
        assert_eq!(
            text.matches(from).count(),
            1,
            "`{from}` is not once in the README"
        );
        let errors = check(&section_of(&text.replacen(from, to, 1)));
        for e in *expected {
            assert!(
                errors.iter().any(|m| m.contains(e)),
                "changing `{from}` to `{to}` should be reported with `{e}`; reported: {errors:#?}"
            );
        }
    }
}
