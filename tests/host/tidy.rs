//! Rules of the code's shape, checked on the source text (in the manner of
//! rust-analyzer's tidy tests): each rule says why it exists, and a failure
//! names the file and the line.
//!
//! - no import cycle between `src/`'s top-level modules;
//! - the pure machines (`call/machine.rs`, `media/`) use no tokio, no clock and
//!   no I/O;
//! - only `baresip/client.rs` opens a TCP connection of the daemon's own
//!   (the agent's WebSocket and `http_client.rs` are the two others);
//! - every module opens with a doc comment saying what it owns;
//! - no log line above DEBUG carries what people said or the numbers they
//!   dialled (journald keeps INFO for anyone in `adm`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// `src/a/b.rs` → `a`; `src/a.rs` → `a`; the crate roots → `None`.
fn top_module(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// The code of a file without its tests module and comments: what the
/// module itself depends on.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start() == "#[cfg(test)]" {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        out.push((n + 1, code));
    }
    out
}

/// The top-level modules a file names through `crate::X` (in `use` trees,
/// `crate::{a, b}` groups included, and in paths).
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    refs.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                refs.insert(name);
            }
        }
    }
    refs
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let files = rust_files(&src());
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(f)).collect();
    // module → (module it uses → the first place it does)
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = top_module(file) else { continue };
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue; // a `#[cfg(test)] mod tests;` of its own
        }
        let text = fs::read_to_string(file).expect("read source");
        // A multi-line `use crate::{...}` group: join the file's code first.
        let code: String = code_lines(&text).iter().map(|(_, c)| *c).collect::<Vec<_>>().join(" ");
        for to in crate_refs(&code) {
            if to != from && modules.contains(&to) {
                let place = file.strip_prefix(src()).unwrap().display().to_string();
                edges.entry(from.clone()).or_default().entry(to).or_insert(place);
            }
        }
    }
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(start) = path.iter().position(|p| p == node) {
            let mut cycle: Vec<String> = path[start..].to_vec();
            cycle.push(node.to_string());
            let hops: Vec<String> = cycle.windows(2).map(|w| format!("{} → {} (in src/{})", w[0], w[1], edges[&w[0]][&w[1]])).collect();
            cycles.push(hops.join(", "));
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flat_map(|e| e.keys()) {
            visit(next, edges, path, done, cycles);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut cycles = Vec::new();
    let mut done = BTreeSet::new();
    for module in &modules {
        visit(module, &edges, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles between top-level modules:\n{}", cycles.join("\n"));
}

#[test]
fn the_machines_use_no_tokio_clock_or_io() {
    let mut files = vec![src().join("call/machine.rs")];
    files.extend(rust_files(&src().join("media")));
    let banned = ["tokio", "Instant", "SystemTime", "std::fs", "std::net", "std::io", "std::thread", "tracing", "Clock"];
    let mut found = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("read source");
        for (n, code) in code_lines(&text) {
            for word in banned {
                if code.contains(word) {
                    found.push(format!("src/{}:{n}: {word}", file.strip_prefix(src()).unwrap().display()));
                }
            }
        }
    }
    assert!(found.is_empty(), "a pure machine does no I/O and reads no clock (inputs carry a Now):\n{}", found.join("\n"));
}

#[test]
fn only_the_baresip_client_opens_the_daemons_connection() {
    // The agent's WebSocket and the one HTTP client (the CLI's requests, the
    // signed URL) are the only other TCP connections cap4 opens; Baresip has one ctrl_tcp client, and a second
    // one would kick the daemon's out.
    let allowed = ["baresip/client.rs", "ai/elevenlabs.rs", "http_client.rs"];
    let mut found = Vec::new();
    for file in rust_files(&src()) {
        let rel = file.strip_prefix(src()).unwrap().display().to_string();
        let text = fs::read_to_string(&file).expect("read source");
        for (n, code) in code_lines(&text) {
            if (code.contains("TcpStream::connect") || code.contains("TcpSocket")) && !allowed.contains(&rel.as_str()) {
                found.push(format!("src/{rel}:{n}"));
            }
        }
    }
    assert!(found.is_empty(), "TCP connections opened outside the allowed modules:\n{}", found.join("\n"));
}

#[test]
fn every_module_opens_with_a_doc_comment() {
    let mut missing = Vec::new();
    for file in rust_files(&src()) {
        let text = fs::read_to_string(&file).expect("read source");
        if !text.trim_start().starts_with("//!") {
            missing.push(format!("src/{}", file.strip_prefix(src()).unwrap().display()));
        }
    }
    assert!(missing.is_empty(), "modules without a `//!` doc comment saying what they own:\n{}", missing.join("\n"));
}

#[test]
fn personal_data_is_logged_at_debug_only() {
    let personal = ["text =", "%text", "phone_number", "number =", "%number", "transcript"];
    let mut found = Vec::new();
    for file in rust_files(&src()) {
        let rel = file.strip_prefix(src()).unwrap().display().to_string();
        let text = fs::read_to_string(&file).expect("read source");
        let code = code_lines(&text);
        // A log macro call can span lines: look from `info!(` to its `);`.
        let mut open: Option<(usize, String)> = None;
        for (n, line) in code {
            if open.is_none() && ["info!(", "warn!(", "error!("].iter().any(|m| line.contains(m)) {
                open = Some((n, String::new()));
            }
            if let Some((start, buf)) = open.as_mut() {
                buf.push_str(line);
                if line.contains(");") {
                    // Fields, not the message: a message may name a config key.
                    let fields = without_strings(buf);
                    if let Some(field) = personal.iter().find(|p| fields.contains(*p)) {
                        found.push(format!("src/{rel}:{start}: {field}"));
                    }
                    open = None;
                }
            }
        }
    }
    assert!(found.is_empty(), "personal data in a log line above DEBUG:\n{}", found.join("\n"));
}

/// `code` with every string literal emptied.
fn without_strings(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in code.chars() {
        match (in_string, c) {
            (true, '\\') if !escaped => escaped = true,
            (true, '"') if !escaped => {
                in_string = false;
                out.push('"');
            }
            (true, _) => escaped = false,
            (false, '"') => {
                in_string = true;
                out.push('"');
            }
            (false, _) => out.push(c),
        }
    }
    out
}
