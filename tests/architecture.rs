//! The shape of src/, kept true: the client and the script side never
//! import each other, and no module imports one that imports it back.
//!
//! A module is a file; its imports are the `crate::`, `super::` and
//! `self::` paths it names (in `use` lines or inline) and the modules it
//! declares with `mod`. Tests inside a file (`#[cfg(test)]` onwards) are
//! left out: they may look at their parent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path ("client::call") of a file under src/.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The longest known module that `path` (already absolute, `a::b::c`)
/// names: `a::b` when `c` is an item of it.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let mut parts: Vec<&str> = path.split("::").collect();
    while !parts.is_empty() {
        let candidate = parts.join("::");
        if modules.contains(&candidate) {
            return Some(candidate);
        }
        parts.pop();
    }
    None
}

/// Every module each module imports.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.starts_with(src.join("bin")));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == ':';
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut imports = BTreeSet::new();
        for line in code.lines().map(str::trim) {
            if line.starts_with("//") {
                continue;
            }
            if let Some(name) = line
                .strip_prefix("mod ")
                .or_else(|| line.strip_prefix("pub mod "))
                .or_else(|| line.strip_prefix("pub(crate) mod "))
                .and_then(|rest| rest.strip_suffix(';'))
            {
                let child = if module.is_empty() {
                    name.to_string()
                } else {
                    format!("{module}::{name}")
                };
                imports.insert(child);
                continue;
            }
            // Paths named anywhere on the line, `use` or inline.
            let mut rest = line;
            while let Some(at) = ["crate::", "super::", "self::"]
                .iter()
                .filter_map(|p| rest.find(p).map(|i| (i, *p)))
                .min()
            {
                let (i, prefix) = at;
                let tail: String = rest[i + prefix.len()..]
                    .chars()
                    .take_while(|&c| word(c))
                    .collect();
                let base = match prefix {
                    "crate::" => String::new(),
                    "super::" => parent.to_string(),
                    _ => module.clone(),
                };
                let full = if base.is_empty() {
                    tail.trim_end_matches(':').to_string()
                } else {
                    format!("{base}::{}", tail.trim_end_matches(':'))
                };
                // `use super::{a, b}`: each name in the braces.
                let after = &rest[i + prefix.len() + tail.len()..];
                let targets: Vec<String> = if full.ends_with("::") || after.starts_with('{') {
                    let inside = after.trim_start_matches('{');
                    let inside = inside.split('}').next().unwrap_or("");
                    inside
                        .split(',')
                        .map(|n| n.trim().split("::").next().unwrap_or("").to_string())
                        .filter(|n| !n.is_empty() && n != "self")
                        .map(|n| format!("{}::{n}", full.trim_end_matches("::")))
                        .chain([full.trim_end_matches("::").to_string()])
                        .collect()
                } else {
                    vec![full]
                };
                for target in targets {
                    if let Some(m) = resolve(&target, &modules)
                        && m != module
                    {
                        imports.insert(m);
                    }
                }
                rest = &rest[i + prefix.len()..];
            }
        }
        graph.insert(module, imports);
    }
    graph
}

#[test]
fn client_and_script_never_import_each_other() {
    let graph = import_graph();
    assert!(graph.contains_key("client::call") && graph.contains_key("script::server"));
    for (module, imports) in &graph {
        for (side, other) in [("client", "script"), ("script", "client")] {
            if module == side || module.starts_with(&format!("{side}::")) {
                let crossing: Vec<&String> = imports
                    .iter()
                    .filter(|i| *i == other || i.starts_with(&format!("{other}::")))
                    .collect();
                assert!(crossing.is_empty(), "{module} imports {crossing:?}");
            }
        }
    }
    // What both stand on imports neither.
    for below in ["protocol", "sys"] {
        for (module, imports) in &graph {
            if module == below || module.starts_with(&format!("{below}::")) {
                assert!(
                    imports
                        .iter()
                        .all(|i| !i.starts_with("client") && !i.starts_with("script")),
                    "{module} imports {imports:?}"
                );
            }
        }
    }
}

#[test]
fn no_import_cycles() {
    let graph = import_graph();
    // Depth-first search for a back edge.
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(module) {
            return;
        }
        if let Some(at) = path.iter().position(|m| *m == module) {
            panic!(
                "import cycle: {}",
                path[at..].join(" -> ") + " -> " + module
            );
        }
        path.push(module);
        for next in graph.get(module).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(module);
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_checker_sees_imports() {
    // A check that finds nothing proves nothing: it must see the edges
    // the tree is built of.
    let graph = import_graph();
    let edges = |m: &str| graph[m].iter().cloned().collect::<Vec<_>>();
    assert!(edges("script::server").contains(&"script::monitor".to_string()));
    assert!(edges("script::monitor").contains(&"script::executor".to_string()));
    assert!(edges("client::spawn").contains(&"client::connect".to_string()));
    assert!(edges("client::call").contains(&"protocol".to_string()));
    assert!(edges("protocol::io").contains(&"protocol::codec".to_string()));
    assert!(edges("").contains(&"client".to_string()));
}

// ------------------------------------------------ the Perl and Python sides

/// Depth-first search for a back edge: the first cycle, if any.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit<'a>(
        module: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if done.contains(module) {
            return None;
        }
        if let Some(at) = path.iter().position(|m| *m == module) {
            return Some(path[at..].join(" -> ") + " -> " + module);
        }
        path.push(module);
        for next in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(module);
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

fn files_under(dir: &Path, extension: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, extension, out);
        } else if path.extension().is_some_and(|e| e == extension) {
            out.push(path);
        }
    }
}

/// The Perl side's modules (sides/perl/lib) and which of ours each loads
/// (`use` or `require` of a `Proc::Prefork::Interp` name, outside POD and
/// after `__END__` nothing).
fn perl_graph() -> BTreeMap<String, BTreeSet<String>> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("sides/perl/lib");
    let mut files = Vec::new();
    files_under(&lib, "pm", &mut files);
    let mut graph = BTreeMap::new();
    for file in files {
        let module = file
            .strip_prefix(&lib)
            .unwrap()
            .with_extension("")
            .to_string_lossy()
            .replace('/', "::");
        let text = std::fs::read_to_string(&file).unwrap();
        let mut in_pod = false;
        let mut imports = BTreeSet::new();
        for line in text.lines() {
            if line == "__END__" || line == "__DATA__" {
                break;
            }
            if line.starts_with('=') {
                in_pod = !line.starts_with("=cut");
                continue;
            }
            if in_pod {
                continue;
            }
            let code = line.split('#').next().unwrap().trim();
            for word in ["use ", "require "] {
                if let Some(rest) = code.strip_prefix(word) {
                    let name: String = rest
                        .chars()
                        .take_while(|&c| c.is_alphanumeric() || c == '_' || c == ':')
                        .collect();
                    if (name == "Proc::Prefork::Interp"
                        || name.starts_with("Proc::Prefork::Interp::"))
                        && name != module
                    {
                        imports.insert(name);
                    }
                }
            }
        }
        graph.insert(module, imports);
    }
    graph
}

/// The Python package's modules (sides/python/prefork_interp) and which
/// of its own each imports (`from . import a, b`, `from ._a import x`,
/// `from prefork_interp... import`, `import prefork_interp[._a]`), at
/// the top or inside a function. A name that is no module of the package
/// is the package's API (`__init__`).
fn python_graph() -> BTreeMap<String, BTreeSet<String>> {
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("sides/python/prefork_interp");
    let mut files = Vec::new();
    files_under(&package, "py", &mut files);
    let mut graph = BTreeMap::new();
    for file in files {
        let module = file.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let mut imports = BTreeSet::new();
        for line in text.lines() {
            let code = line.split('#').next().unwrap().trim();
            let named: Vec<String> = if let Some(rest) = code.strip_prefix("from ") {
                let (from, names) = rest.split_once(" import ").unwrap_or((rest, ""));
                let from = from.trim();
                let from = from
                    .strip_prefix("prefork_interp")
                    .map(|r| r.replacen('.', "", 1))
                    .or_else(|| from.strip_prefix('.').map(str::to_owned));
                match from.as_deref() {
                    Some("") => names
                        .trim_matches(|c| c == '(' || c == ')' || c == ' ')
                        .split(',')
                        .map(|n| n.split_whitespace().next().unwrap_or("").to_owned())
                        .collect(),
                    Some(sub) => vec![sub.split('.').next().unwrap().to_owned()],
                    None => vec![],
                }
            } else if let Some(rest) = code.strip_prefix("import prefork_interp.") {
                vec![rest.split([' ', '.', ',']).next().unwrap().to_owned()]
            } else if code == "import prefork_interp" || code.starts_with("import prefork_interp ")
            {
                vec!["__init__".to_owned()]
            } else {
                vec![]
            };
            for name in named.into_iter().filter(|n| !n.is_empty() && *n != module) {
                if package.join(format!("{name}.py")).exists() {
                    imports.insert(name);
                } else {
                    // `from . import initialisation_complete`: the
                    // package itself, its API.
                    imports.insert("__init__".to_owned());
                }
            }
        }
        graph.insert(module, imports);
    }
    graph
}

/// The Ruby side's files (sides/ruby/lib: prefork_interp.rb, the API,
/// and prefork_interp/*.rb, its roles) and which of its own each loads
/// (`require_relative "x"`, `require "prefork_interp[/x]"`), at the top
/// or inside a method.
fn ruby_graph() -> BTreeMap<String, BTreeSet<String>> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("sides/ruby/lib");
    let mut files = Vec::new();
    files_under(&lib, "rb", &mut files);
    let mut graph = BTreeMap::new();
    for file in files {
        let in_roles = file.parent() != Some(lib.as_path());
        let module = file.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let mut loads = BTreeSet::new();
        for line in text.lines() {
            let code = line.split('#').next().unwrap().trim();
            let quoted = |rest: &str| {
                rest.trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_owned()
            };
            let name = if let Some(rest) = code.strip_prefix("require_relative ") {
                let target = quoted(rest);
                // From the API file, "prefork_interp/x"; from a role, "x".
                match (in_roles, target.strip_prefix("prefork_interp/")) {
                    (false, Some(role)) => role.to_owned(),
                    (false, None) => target,
                    (true, _) if target == "../prefork_interp" => "prefork_interp".to_owned(),
                    (true, _) => target,
                }
            } else if let Some(rest) = code.strip_prefix("require ") {
                let target = quoted(rest);
                match target.strip_prefix("prefork_interp/") {
                    Some(role) => role.to_owned(),
                    None if target == "prefork_interp" => target,
                    None => continue,
                }
            } else {
                continue;
            };
            if name != module {
                loads.insert(name);
            }
        }
        graph.insert(module, loads);
    }
    graph
}

/// The rules every script side's roles keep: no cycles, the wire module
/// imports no other module of ours, and no role loads the side's API
/// module (the API loads the roles). The runner of `--run` (and Python's
/// `__main__`) uses the API, as a script does.
fn check_side(graph: &BTreeMap<String, BTreeSet<String>>, top: &str, wire: &str, users: &[&str]) {
    assert!(graph.len() >= 8, "too few modules seen: {graph:#?}");
    assert!(
        graph.values().any(|i| i.contains(wire)),
        "no module imports {wire}: the checker sees no edges? {graph:#?}"
    );
    assert!(!graph[top].is_empty(), "{top} loads no role: {graph:#?}");
    if let Some(cycle) = find_cycle(graph) {
        panic!("import cycle: {cycle}");
    }
    assert!(graph[wire].is_empty(), "{wire} imports {:?}", graph[wire]);
    for (module, imports) in graph {
        if module != top && !users.contains(&module.as_str()) {
            assert!(
                !imports.contains(top),
                "{module} imports the API module {top}"
            );
        }
    }
}

#[test]
fn perl_side_roles_without_cycles() {
    check_side(
        &perl_graph(),
        "Proc::Prefork::Interp",
        "Proc::Prefork::Interp::Wire",
        &["Proc::Prefork::Interp::Run"],
    );
}

#[test]
fn python_side_roles_without_cycles() {
    check_side(
        &python_graph(),
        "__init__",
        "_wire",
        &["_runner", "__main__"],
    );
}

#[test]
fn ruby_side_roles_without_cycles() {
    let graph = ruby_graph();
    for (module, loads) in &graph {
        for name in loads {
            assert!(
                graph.contains_key(name),
                "{module} loads {name}, no file of ours"
            );
        }
    }
    check_side(&graph, "prefork_interp", "wire", &["runner"]);
}
