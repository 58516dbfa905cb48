//! The shape of the source tree, checked: no import cycle between the top-level modules of
//! any crate of the workspace (a module of one crate may use another only if that one does
//! not, through any chain, use it back).
//!
//! An import is a path `crate::NAME` (or `crate::{NAME, ..}`) in a file below top-level module
//! `MODULE` (`MODULE.rs` or `MODULE/`), outside comments; `lib.rs` and `main.rs` re-export
//! and are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The source directories of the workspace's crates.
const CRATES: &[&str] = &[
    "src",
    "base/src",
    "consensus/src",
    "discovery/src",
    "gossip/src",
];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text of a source file without its comments (`//` to the end of the line, where the
/// `//` starts the line or follows a space).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| {
            let cut = l
                .match_indices("//")
                .find(|(i, _)| *i == 0 || l.as_bytes()[i - 1].is_ascii_whitespace())
                .map_or(l.len(), |(i, _)| i);
            &l[..cut]
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The top-level modules `code` imports.
fn imports(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for part in group.split(',') {
                if let Some(id) = ident_at(part.trim()) {
                    out.insert(id.to_string());
                }
            }
        } else if let Some(id) = ident_at(rest) {
            out.insert(id.to_string());
        }
    }
    out
}

/// The import graph of the top-level modules of the crate whose sources are in `src`.
fn graph_of(src: &Path, files: &[(PathBuf, String)]) -> Graph {
    let mut graph = Graph::new();
    for (path, text) in files {
        let rel = path.strip_prefix(src).expect("below the crate");
        let first = rel.components().next().expect("a component");
        let top = first.as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let used = imports(&code_of(text));
        let entry = graph.entry(top.clone()).or_default();
        entry.extend(used.into_iter().filter(|m| *m != top));
    }
    graph
}

/// Every cycle the depth-first search meets, as the modules on it (the first repeated last).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    fn visit(
        graph: &Graph,
        at: &str,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        state.insert(at.to_string(), 1);
        path.push(at.to_string());
        for next in graph.get(at).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let from = path.iter().position(|m| m == next).expect("on the path");
                    let mut cycle = path[from..].to_vec();
                    cycle.push(next.clone());
                    found.push(cycle);
                }
                Some(_) => {}
                None => visit(graph, next, state, path, found),
            }
        }
        path.pop();
        state.insert(at.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    let mut found = Vec::new();
    for m in graph.keys() {
        if !state.contains_key(m.as_str()) {
            visit(graph, m, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut report = Vec::new();
    for krate in CRATES {
        let src = root.join(krate);
        let mut paths = Vec::new();
        rust_files(&src, &mut paths);
        assert!(!paths.is_empty(), "no sources in {}", src.display());
        let files: Vec<(PathBuf, String)> = paths
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("source");
                (p, text)
            })
            .collect();
        for cycle in cycles(&graph_of(&src, &files)) {
            report.push(format!("{krate}: {}", cycle.join(" -> ")));
        }
    }
    assert!(report.is_empty(), "import cycles:\n{}", report.join("\n"));
}

/// The check itself finds a cycle through a module's children, and none in a chain.
#[test]
fn the_check_finds_a_cycle_and_passes_a_chain() {
    let src = Path::new("/x/src");
    let file = |p: &str, t: &str| (src.join(p), t.to_string());
    let cyclic = [
        file("a.rs", "use crate::b::B;\n// use crate::c::C;"),
        file("b/mod.rs", "mod inner;"),
        file("b/inner.rs", "use crate::{c::C, base};"),
        file("c.rs", "fn f() { crate::a::g(); }"),
        file("lib.rs", "use crate::a::A;"),
    ];
    let graph = graph_of(src, &cyclic);
    assert_eq!(
        graph["a"],
        BTreeSet::from(["b".to_string()]),
        "comments are skipped"
    );
    assert_eq!(
        cycles(&graph),
        [["a", "b", "c", "a"].map(String::from).to_vec()]
    );
    let chain = [
        file("a.rs", "use crate::b::B; // crate::c"),
        file("b.rs", "use crate::c::C;"),
        file("c.rs", ""),
    ];
    let graph = graph_of(src, &chain);
    assert!(graph["a"].contains("b") && !graph["a"].contains("c"));
    assert!(cycles(&graph).is_empty());
}
