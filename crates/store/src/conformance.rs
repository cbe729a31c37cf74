//! The conformance kit: behaviour every [`Store`] backend must show. A backend's
//! test calls [`run_all`] with a function that opens the backend on a directory;
//! the kit reopens it there to check durability across restarts.

// This module is test code compiled into other crates' tests; a failed expectation
// is the test failing.
#![allow(clippy::expect_used)]

use crate::{Mutation, Space, Store, StoreError};
use std::path::Path;

fn put(space: Space, key: &str, value: &str) -> Mutation {
    Mutation::Put {
        space,
        key: key.into(),
        value: value.as_bytes().to_vec(),
    }
}

fn del(space: Space, key: &str) -> Mutation {
    Mutation::Delete {
        space,
        key: key.into(),
    }
}

fn keys(rows: &[(String, Vec<u8>)]) -> Vec<&str> {
    rows.iter().map(|(k, _)| k.as_str()).collect()
}

/// Runs every check against a fresh directory each.
pub fn run_all<S: Store>(open: impl Fn(&Path) -> Result<S, StoreError>) {
    puts_and_deletes_are_visible(&open);
    spaces_are_separate(&open);
    commits_survive_reopen(&open);
    load_is_in_key_order(&open);
    load_each_streams_what_load_returns(&open);
    batches_apply_in_order_last_write_wins(&open);
    integrity_check_passes_on_a_healthy_store(&open);
}

fn fresh<S: Store>(open: &impl Fn(&Path) -> Result<S, StoreError>) -> (tempfile::TempDir, S) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path()).expect("open store");
    (dir, store)
}

fn puts_and_deletes_are_visible<S: Store>(open: &impl Fn(&Path) -> Result<S, StoreError>) {
    let (_dir, mut s) = fresh(open);
    s.commit(&[put(Space::Devices, "a", "1"), put(Space::Devices, "b", "2")])
        .expect("commit");
    s.commit(&[
        put(Space::Devices, "a", "3"),
        del(Space::Devices, "b"),
        del(Space::Devices, "zz"),
    ])
    .expect("commit");
    let rows = s.load(Space::Devices).expect("load");
    assert_eq!(rows, vec![("a".to_string(), b"3".to_vec())]);
}

fn spaces_are_separate<S: Store>(open: &impl Fn(&Path) -> Result<S, StoreError>) {
    let (_dir, mut s) = fresh(open);
    s.commit(&[
        put(Space::Devices, "k", "d"),
        put(Space::Sessions, "k", "s"),
    ])
    .expect("commit");
    assert_eq!(s.load(Space::Devices).expect("load")[0].1, b"d");
    assert_eq!(s.load(Space::Sessions).expect("load")[0].1, b"s");
}

fn commits_survive_reopen<S: Store>(open: &impl Fn(&Path) -> Result<S, StoreError>) {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let mut s = open(dir.path()).expect("open");
        s.commit(&[put(Space::Devices, "dev:1;a=b$c#d?e%f", "x")])
            .expect("commit");
    }
    let mut s = open(dir.path()).expect("reopen");
    assert_eq!(
        keys(&s.load(Space::Devices).expect("load")),
        ["dev:1;a=b$c#d?e%f"]
    );
}

fn load_is_in_key_order<S: Store>(open: &impl Fn(&Path) -> Result<S, StoreError>) {
    let (_dir, mut s) = fresh(open);
    let batch: Vec<Mutation> = ["m", "b", "z", "a", "B"]
        .iter()
        .map(|k| put(Space::Devices, k, "v"))
        .collect();
    s.commit(&batch).expect("commit");
    assert_eq!(
        keys(&s.load(Space::Devices).expect("load")),
        ["B", "a", "b", "m", "z"]
    );
}

fn load_each_streams_what_load_returns<S: Store>(open: &impl Fn(&Path) -> Result<S, StoreError>) {
    let (_dir, mut s) = fresh(open);
    let batch: Vec<Mutation> = ["b", "a", "c"]
        .iter()
        .map(|k| put(Space::Sessions, k, &format!("value of {k}")))
        .collect();
    s.commit(&batch).expect("commit");
    let mut streamed = Vec::new();
    s.load_each(Space::Sessions, &mut |k, v| {
        streamed.push((k.to_owned(), v.to_vec()));
        Ok(())
    })
    .expect("load_each");
    assert_eq!(streamed, s.load(Space::Sessions).expect("load"));
    assert_eq!(keys(&streamed), ["a", "b", "c"]);
    // The visitor's error stops the walk at once and is returned.
    let mut seen = 0;
    let stopped = s.load_each(Space::Sessions, &mut |_, _| {
        seen += 1;
        Err(StoreError::Stopped)
    });
    assert!(matches!(stopped, Err(StoreError::Stopped)));
    assert_eq!(seen, 1);
}

fn batches_apply_in_order_last_write_wins<S: Store>(
    open: &impl Fn(&Path) -> Result<S, StoreError>,
) {
    let (_dir, mut s) = fresh(open);
    // Within one batch, later mutations of a key win, as in the committer's
    // groups of several writes to one device.
    s.commit(&[
        put(Space::Devices, "k", "1"),
        del(Space::Devices, "k"),
        put(Space::Devices, "k", "2"),
        put(Space::Devices, "gone", "x"),
        del(Space::Devices, "gone"),
    ])
    .expect("commit");
    assert_eq!(
        s.load(Space::Devices).expect("load"),
        vec![("k".to_string(), b"2".to_vec())]
    );
    // An empty batch is a valid commit.
    s.commit(&[]).expect("empty commit");
}

fn integrity_check_passes_on_a_healthy_store<S: Store>(
    open: &impl Fn(&Path) -> Result<S, StoreError>,
) {
    let (_dir, mut s) = fresh(open);
    s.commit(&[put(Space::Devices, "a", "1")]).expect("commit");
    s.check_integrity().expect("integrity");
}
