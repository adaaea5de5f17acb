//! `type = "filter"`: drops records whose `field` contains a stop word, or keeps only the records a jq
//! predicate holds for.

use anyhow::bail;

use crate::component::{Output, Processor};
use crate::config::{FilterConfig, MatchMode};
use crate::error::StageError;
use crate::event::Event;
use crate::jq::{self, Jq};
use crate::processors::map::split_path;
use crate::template;

/// Problems of a `filter`'s settings, each with its key: exactly one of `stop_words` (with `field`) and
/// `jq`, no empty stop word, a jq program that compiles.
pub fn validate(c: &FilterConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match (c.stop_words.is_empty(), &c.jq) {
        (false, Some(_)) => out.push(("jq".into(), "give `stop_words` or `jq`, not both".into())),
        (true, None) => out.push((
            "stop_words".into(),
            "give `stop_words` (with `field`) or a `jq` predicate".into(),
        )),
        (false, None) => {
            match &c.field {
                None => out.push((
                    "field".into(),
                    "required with `stop_words`: the field to search".into(),
                )),
                Some(f) => {
                    if let Err(e) = split_path(f) {
                        out.push(("field".into(), e));
                    }
                }
            }
            if c.stop_words.iter().any(|w| w.is_empty()) {
                out.push((
                    "stop_words".into(),
                    "an empty stop word would drop every record".into(),
                ));
            }
        }
        (true, Some(program)) => {
            if c.field.is_some() {
                out.push((
                    "field".into(),
                    "only used with `stop_words`, not with `jq`".into(),
                ));
            }
            if let Err(e) = jq::compile(program) {
                out.push(("jq".into(), e));
            }
        }
    }
    out
}

/// The `filter` processor.
#[derive(Debug)]
pub struct Filter {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    StopWords(StopWords),
    Jq(Jq),
}

/// Stop words and how they match.
#[derive(Debug)]
struct StopWords {
    /// The field searched, split at dots.
    path: Vec<String>,
    /// The words, lower-cased unless `case_sensitive`.
    words: Vec<String>,
    /// Whole words only.
    whole_words: bool,
    case_sensitive: bool,
}

impl Filter {
    /// Builds a filter from its settings.
    ///
    /// # Errors
    /// Settings [`validate`] finds a problem with.
    pub fn new(c: &FilterConfig) -> anyhow::Result<Self> {
        let problems = validate(c);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            bail!("{}", list.join("; "));
        }
        let mode = match (&c.jq, &c.field) {
            (Some(program), _) => Mode::Jq(jq::compile(program).map_err(|e| anyhow::anyhow!("jq: {e}"))?),
            (None, Some(field)) => Mode::StopWords(StopWords {
                path: split_path(field).map_err(|e| anyhow::anyhow!("field: {e}"))?,
                words: c
                    .stop_words
                    .iter()
                    .map(|w| {
                        if c.case_sensitive {
                            w.clone()
                        } else {
                            w.to_lowercase()
                        }
                    })
                    .collect(),
                whole_words: c.match_mode == MatchMode::Word,
                case_sensitive: c.case_sensitive,
            }),
            // `validate` above rejects stop words without a field.
            (None, None) => bail!("field: required with `stop_words`"),
        };
        Ok(Self { mode })
    }
}

impl Processor for Filter {
    fn process(&self, event: Event) -> Result<Vec<Output>, StageError> {
        let keep = match &self.mode {
            Mode::StopWords(sw) => match template::lookup(&event.value, &sw.path) {
                Some(serde_json::Value::String(text)) => !sw.found_in(text),
                // A missing field or one that is not text holds no words: nothing to match, so nothing
                // to drop the record for.
                _ => true,
            },
            Mode::Jq(jq) => jq
                .is_true(&event.value)
                .map_err(|e| StageError::permanent(format!("filter jq `{}`: {e}", jq.program())))?,
        };
        Ok(if keep {
            vec![Output::Next(event)]
        } else {
            Vec::new()
        })
    }
}

impl StopWords {
    /// Whether `text` contains one of the words.
    fn found_in(&self, text: &str) -> bool {
        let lowered;
        let text = if self.case_sensitive {
            text
        } else {
            lowered = text.to_lowercase();
            &lowered
        };
        self.words.iter().any(|w| {
            if self.whole_words {
                contains_word(text, w)
            } else {
                text.contains(w.as_str())
            }
        })
    }
}

/// A character that continues a word: `bird` is not a word of `bird-watching` nor of `bird_2`.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// Whether `word` occurs in `text` with no word character right before or after it.
fn contains_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let mut from = 0;
    // Every occurrence is tried, overlapping ones included: the first may be inside a longer word
    // while a later one stands alone.
    while let Some(i) = text.get(from..).and_then(|rest| rest.find(word)) {
        let start = from + i;
        let end = start + word.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        if !before.is_some_and(is_word_char) && !after.is_some_and(is_word_char) {
            return true;
        }
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn stop_words(mode: MatchMode, case_sensitive: bool) -> FilterConfig {
        FilterConfig {
            field: Some("message".into()),
            stop_words: vec!["mango".into(), "bird-watching".into(), "ailurophobia".into()],
            match_mode: mode,
            case_sensitive,
            jq: None,
        }
    }

    fn jq_config(program: &str) -> FilterConfig {
        FilterConfig {
            field: None,
            stop_words: Vec::new(),
            match_mode: MatchMode::Substring,
            case_sensitive: false,
            jq: Some(program.into()),
        }
    }

    fn kept(f: &Filter, value: Value) -> bool {
        let out = f.process(Event::new(value.clone())).unwrap();
        match out.as_slice() {
            [] => false,
            [Output::Next(e)] => {
                assert_eq!(e.value, value);
                true
            }
            other => panic!("unexpected outputs {other:?}"),
        }
    }

    fn message_kept(f: &Filter, message: &str) -> bool {
        kept(f, json!({"user": "ann", "message": message}))
    }

    #[test]
    fn substring_matches_anywhere_ignoring_case() {
        let f = Filter::new(&stop_words(MatchMode::Substring, false)).unwrap();
        assert!(!message_kept(&f, "I love mango"));
        assert!(!message_kept(&f, "MANGOS are great"));
        assert!(!message_kept(&f, "Bird-Watching weekend"));
        assert!(!message_kept(&f, "my ailurophobiac cousin"));
        assert!(!message_kept(&f, "pre-mango_juice"));
        assert!(message_kept(&f, "I love apples"));
        assert!(message_kept(&f, "bird watching is fun"));
    }

    #[test]
    fn word_mode_needs_whole_words() {
        let f = Filter::new(&stop_words(MatchMode::Word, false)).unwrap();
        assert!(!message_kept(&f, "mango"));
        assert!(!message_kept(&f, "I love Mango!"));
        assert!(!message_kept(&f, "(ailurophobia) is real"));
        assert!(!message_kept(&f, "going bird-watching, then mangos"));
        assert!(!message_kept(&f, "mangos and a mango"));
        assert!(message_kept(&f, "MANGOS are great"));
        assert!(message_kept(&f, "my ailurophobiac cousin"));
        assert!(message_kept(&f, "pre-mango"));
        assert!(message_kept(&f, "mango_juice"));
        assert!(message_kept(&f, "mango2"));
        assert!(message_kept(&f, "bird-watching-club"));
        assert!(message_kept(&f, "birdwatching"));
    }

    #[test]
    fn case_sensitive_when_asked() {
        let f = Filter::new(&stop_words(MatchMode::Substring, true)).unwrap();
        assert!(message_kept(&f, "MANGO"));
        assert!(message_kept(&f, "Ailurophobia"));
        assert!(!message_kept(&f, "mango"));
        let f = Filter::new(&stop_words(MatchMode::Word, true)).unwrap();
        assert!(message_kept(&f, "Bird-watching"));
        assert!(!message_kept(&f, "a bird-watching trip"));
    }

    #[test]
    fn missing_or_non_text_fields_are_kept() {
        let f = Filter::new(&stop_words(MatchMode::Substring, false)).unwrap();
        assert!(kept(&f, json!({"user": "ann"})));
        assert!(kept(&f, json!({"message": 5})));
        assert!(kept(&f, json!({"message": ["mango"]})));
        assert!(kept(&f, json!("mango")));
    }

    #[test]
    fn nested_fields() {
        let mut c = stop_words(MatchMode::Word, false);
        c.field = Some("payload.text".into());
        let f = Filter::new(&c).unwrap();
        assert!(!kept(&f, json!({"payload": {"text": "a mango"}})));
        assert!(kept(
            &f,
            json!({"payload": {"text": "an apple"}, "message": "mango"})
        ));
    }

    #[test]
    fn jq_predicate() {
        let f = Filter::new(&jq_config(".amount > 0")).unwrap();
        assert!(kept(&f, json!({"amount": 3})));
        assert!(!kept(&f, json!({"amount": -3})));
        let f = Filter::new(&jq_config(r#".message | test("^hi")"#)).unwrap();
        assert!(kept(&f, json!({"message": "hi there"})));
        assert!(!kept(&f, json!({"message": "oh hi"})));
    }

    #[test]
    fn jq_errors_are_permanent() {
        let f = Filter::new(&jq_config(".a.b")).unwrap();
        let e = f.process(Event::new(json!({"a": 5}))).unwrap_err();
        assert!(e.permanent);
        assert!(e.message.contains(".a.b"), "{}", e.message);
    }

    #[test]
    fn keeps_headers_and_key() {
        let f = Filter::new(&stop_words(MatchMode::Word, false)).unwrap();
        let mut e = Event::new(json!({"message": "hello"}));
        e.key = Some("k".into());
        e.set_header("h", "v");
        assert_eq!(f.process(e.clone()).unwrap(), vec![Output::Next(e)]);
    }

    #[test]
    fn validation() {
        assert!(validate(&stop_words(MatchMode::Word, false)).is_empty());
        assert!(validate(&jq_config("select(.a)")).is_empty());

        let mut both = stop_words(MatchMode::Word, false);
        both.jq = Some(".a".into());
        assert_eq!(validate(&both)[0].0, "jq");

        let mut neither = jq_config(".");
        neither.jq = None;
        assert_eq!(validate(&neither)[0].0, "stop_words");

        let mut no_field = stop_words(MatchMode::Word, false);
        no_field.field = None;
        assert_eq!(validate(&no_field)[0].0, "field");
        assert!(Filter::new(&no_field).is_err());

        let mut empty_word = stop_words(MatchMode::Word, false);
        empty_word.stop_words.push(String::new());
        assert_eq!(validate(&empty_word)[0].0, "stop_words");

        let mut bad_field = stop_words(MatchMode::Word, false);
        bad_field.field = Some("a..b".into());
        assert_eq!(validate(&bad_field)[0].0, "field");

        let problems = validate(&jq_config(".a |"));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "jq");
        assert!(problems[0].1.contains("syntax error"), "{problems:?}");
        assert!(Filter::new(&jq_config(".a |")).is_err());
    }

    #[test]
    fn word_search_edges() {
        assert!(contains_word("aaa aa", "aa"));
        assert!(!contains_word("aaa", "aa"));
        assert!(contains_word("é mango é", "mango"));
        assert!(!contains_word("émango", "mango"));
        assert!(!contains_word("", "mango"));
        assert!(!contains_word("mango", ""));
    }
}
