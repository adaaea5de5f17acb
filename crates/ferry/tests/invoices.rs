//! `examples/invoices.toml` (seed 003): generated invoices routed into valid and invalid topics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{example, records, up, wait_for};

fn value(r: &serde_json::Value) -> serde_json::Value {
    r["value"].clone()
}

#[test]
fn every_invoice_lands_in_the_right_topic() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(example("invoices.toml")).unwrap();
    // 200 invoices, quickly: the example makes one a second, forever.
    let fast = text.replace("interval = \"1s\"", "interval = \"1ms\", count = 200");
    assert_ne!(fast, text);
    let config = dir.path().join("invoices.toml");
    std::fs::write(&config, fast).unwrap();
    let up = up(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        &[],
    );
    let (valid, invalid) = wait_for("200 invoices routed", Duration::from_secs(60), || {
        let v = records(&up.url, "valid-invoices");
        let i = records(&up.url, "invalid-invoices");
        (v.len() + i.len() >= 200).then_some((v, i))
    });
    let all = records(&up.url, "all-invoices");
    assert_eq!(all.len(), 200);
    assert_eq!(
        valid.len() + invalid.len(),
        200,
        "every invoice routed exactly once"
    );
    let is_valid = |v: &serde_json::Value| {
        v["amount"].as_f64().unwrap() > 0.0 && !v["customer"].as_str().unwrap().is_empty()
    };
    assert!(valid.iter().all(|r| is_valid(&value(r))));
    assert!(invalid.iter().all(|r| !is_valid(&value(r))));
    // The same invoices, in the same order, split in two.
    let mut routed: Vec<_> = valid.iter().chain(&invalid).map(value).collect();
    let mut sent: Vec<_> = all.iter().map(value).collect();
    let id = |v: &serde_json::Value| v["invoice_id"].as_str().unwrap().to_string();
    routed.sort_by_key(id);
    sent.sort_by_key(id);
    assert_eq!(routed, sent);
    // About half are valid (3 in 5 have a customer, 5 in 6 a positive amount).
    assert!((60..=140).contains(&valid.len()), "{} valid of 200", valid.len());
}
