//! `type = "route"`: each record goes to the topic of the first route whose jq predicate is true;
//! records no route takes go to `default`, or on down the pipeline when there is none.

use anyhow::bail;

use crate::component::{Output, Processor};
use crate::config::{RouteConfig, name_problem};
use crate::error::StageError;
use crate::event::Event;
use crate::jq::{self, Jq};

/// Pushes a problem under `key` if `topic` is not a valid topic name.
fn topic_problem(key: String, topic: &str, out: &mut Vec<(String, String)>) {
    let mut found = Vec::new();
    name_problem("topic", topic, &mut found);
    // `name_problem` names the key it is given; ours are built (`routes[2].topic`), so they are put back.
    out.extend(found.into_iter().map(|(_, message)| (key.clone(), message)));
}

/// Problems of a `route`'s settings, each with its key: at least one route, valid topic names, jq
/// predicates that compile.
pub fn validate(c: &RouteConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if c.routes.is_empty() {
        out.push(("routes".into(), "give at least one route `{ topic, jq }`".into()));
    }
    for (i, route) in c.routes.iter().enumerate() {
        topic_problem(format!("routes[{i}].topic"), &route.topic, &mut out);
        if let Err(e) = jq::compile(&route.jq) {
            out.push((format!("routes[{i}].jq"), e));
        }
    }
    if let Some(default) = &c.default {
        topic_problem("default".into(), default, &mut out);
    }
    out
}

/// The `route` processor.
#[derive(Debug)]
pub struct RouteProcessor {
    /// `(topic, predicate)`, tried in order.
    routes: Vec<(String, Jq)>,
    default: Option<String>,
}

impl RouteProcessor {
    /// Builds a router from its settings.
    ///
    /// # Errors
    /// Settings [`validate`] finds a problem with.
    pub fn new(c: &RouteConfig) -> anyhow::Result<Self> {
        let problems = validate(c);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            bail!("{}", list.join("; "));
        }
        let mut routes = Vec::with_capacity(c.routes.len());
        for (i, route) in c.routes.iter().enumerate() {
            let jq = jq::compile(&route.jq).map_err(|e| anyhow::anyhow!("routes[{i}].jq: {e}"))?;
            routes.push((route.topic.clone(), jq));
        }
        Ok(Self {
            routes,
            default: c.default.clone(),
        })
    }
}

impl Processor for RouteProcessor {
    fn process(&self, event: Event) -> Result<Vec<Output>, StageError> {
        for (topic, jq) in &self.routes {
            let taken = jq.is_true(&event.value).map_err(|e| {
                StageError::permanent(format!("route to `{topic}`: jq `{}`: {e}", jq.program()))
            })?;
            if taken {
                return Ok(vec![Output::To {
                    topic: topic.clone(),
                    event,
                }]);
            }
        }
        Ok(vec![match &self.default {
            Some(topic) => Output::To {
                topic: topic.clone(),
                event,
            },
            None => Output::Next(event),
        }])
    }

    fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = Vec::new();
        for topic in self.routes.iter().map(|(t, _)| t).chain(&self.default) {
            // Two routes may share a topic; it is created once.
            if !topics.contains(topic) {
                topics.push(topic.clone());
            }
        }
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Route;
    use serde_json::{Value, json};

    fn config(default: Option<&str>) -> RouteConfig {
        RouteConfig {
            routes: vec![
                Route {
                    topic: "big".into(),
                    jq: ".amount > 100".into(),
                },
                Route {
                    topic: "refunds".into(),
                    jq: ".amount < 0".into(),
                },
                Route {
                    topic: "big".into(),
                    jq: r#".vip == true"#.into(),
                },
            ],
            default: default.map(str::to_owned),
        }
    }

    fn route(r: &RouteProcessor, value: Value) -> Option<String> {
        let out = r.process(Event::new(value.clone())).unwrap();
        match out.as_slice() {
            [Output::To { topic, event }] => {
                assert_eq!(event.value, value);
                Some(topic.clone())
            }
            [Output::Next(event)] => {
                assert_eq!(event.value, value);
                None
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn first_matching_route_wins() {
        let r = RouteProcessor::new(&config(None)).unwrap();
        assert_eq!(route(&r, json!({"amount": 500})).as_deref(), Some("big"));
        assert_eq!(
            route(&r, json!({"amount": -5, "vip": true})).as_deref(),
            Some("refunds")
        );
        assert_eq!(
            route(&r, json!({"amount": 500, "vip": true})).as_deref(),
            Some("big")
        );
        assert_eq!(
            route(&r, json!({"amount": 5, "vip": true})).as_deref(),
            Some("big")
        );
        // No route and no default: on down the pipeline.
        assert_eq!(route(&r, json!({"amount": 5})), None);
    }

    #[test]
    fn default_takes_the_rest() {
        let r = RouteProcessor::new(&config(Some("other"))).unwrap();
        assert_eq!(route(&r, json!({"amount": 5})).as_deref(), Some("other"));
        assert_eq!(route(&r, json!({"amount": 500})).as_deref(), Some("big"));
        assert_eq!(r.topics(), vec!["big", "refunds", "other"]);
        assert_eq!(
            RouteProcessor::new(&config(None)).unwrap().topics(),
            vec!["big", "refunds"]
        );
    }

    #[test]
    fn headers_and_key_are_kept() {
        let r = RouteProcessor::new(&config(None)).unwrap();
        let mut e = Event::new(json!({"amount": 500}));
        e.key = Some("k".into());
        e.set_header("h", "v");
        assert_eq!(
            r.process(e.clone()).unwrap(),
            vec![Output::To {
                topic: "big".into(),
                event: e
            }]
        );
    }

    #[test]
    fn jq_errors_are_permanent() {
        let mut c = config(Some("other"));
        c.routes[0].jq = ".amount.x".into();
        let r = RouteProcessor::new(&c).unwrap();
        let e = r.process(Event::new(json!({"amount": 5}))).unwrap_err();
        assert!(e.permanent);
        assert!(e.message.contains("big"), "{}", e.message);
    }

    #[test]
    fn validation() {
        assert!(validate(&config(Some("other"))).is_empty());
        let none = RouteConfig {
            routes: Vec::new(),
            default: None,
        };
        assert_eq!(validate(&none)[0].0, "routes");
        let mut c = config(Some("bad default"));
        c.routes[1].topic = "no/slashes".into();
        c.routes[2].jq = ".a ==".into();
        let keys: Vec<String> = validate(&c).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, vec!["routes[1].topic", "routes[2].jq", "default"]);
        assert!(RouteProcessor::new(&c).is_err());
    }
}
