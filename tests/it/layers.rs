//! The layer rule (ARCHITECTURE.md, "Layers"): a module of `src/` imports only modules of a
//! lower rank, and no import circle runs between the submodules of one module. The test
//! parses every source file with syn and follows each `crate::…`, `super::…` and `self::…`
//! path outside `#[cfg(test)]` items. `cargo test --release --test it -- layers --nocapture`
//! prints the import picture.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Each top-level module's rank: it may import modules of a strictly lower rank only.
const RANKS: &[(&str, u8)] = &[
    ("economy", 0),
    ("config", 1),
    ("engine", 2),
    ("protocol", 3),
    ("cluster", 3),
    ("telemetry", 3),
    ("clock", 3),
    ("persist", 4),
    ("client", 4),
    ("server", 5),
    ("node", 6),
    ("commands", 7),
    ("demo", 7),
];

/// Graph nodes are modules cut at this depth (`persist::journal`, `engine::window`).
const NODE_DEPTH: usize = 2;

type Module = Vec<String>;

struct SourceFile {
    module: Module,
    path: PathBuf,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every library source file with its module path (`src/persist/journal.rs` →
/// `persist::journal`); `main.rs` is the binary, above every rank.
fn source_files() -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut stack = vec![src_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src_dir()).expect("under src/");
                let mut module: Module = rel
                    .with_extension("")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                    module.pop();
                }
                if module == ["main"] {
                    continue;
                }
                files.push(SourceFile { module, path });
            }
        }
    }
    files.sort_by(|a, b| a.module.cmp(&b.module));
    let test_only = test_only_modules(&files);
    files.retain(|f| !test_only.iter().any(|t| f.module.starts_with(t)));
    files
}

/// Modules declared `#[cfg(test)] mod name;` (their own files): tests, not layers.
fn test_only_modules(files: &[SourceFile]) -> Vec<Module> {
    let mut test_only = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file.path).expect("read source");
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.path.display()));
        for item in &ast.items {
            if let syn::Item::Mod(m) = item
                && m.content.is_none()
                && is_cfg_test(&m.attrs)
            {
                let mut module = file.module.clone();
                module.push(m.ident.to_string());
                test_only.push(module);
            }
        }
    }
    test_only
}

/// Whether `module` is a module of the crate (a file or a directory with `mod.rs`).
fn is_module(module: &[String]) -> bool {
    if module.is_empty() {
        return true;
    }
    let mut path = src_dir();
    for part in module {
        path.push(part);
    }
    path.with_extension("rs").is_file() || path.join("mod.rs").is_file()
}

/// The graph node a path from the crate root lands in: its longest module prefix, cut
/// at [`NODE_DEPTH`].
fn node_of(path: &[String]) -> Module {
    let mut depth = 0;
    while depth < path.len() && depth < NODE_DEPTH && is_module(&path[..=depth]) {
        depth += 1;
    }
    path[..depth].to_vec()
}

/// Collects the absolute module paths a file refers to, skipping `#[cfg(test)]` items.
struct Imports<'a> {
    module: &'a [String],
    found: BTreeSet<Vec<String>>,
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.parse_args::<syn::Meta>()
                .is_ok_and(|m| m.path().is_ident("test"))
    })
}

impl Imports<'_> {
    /// `crate::a::b` → `[a, b]`; `super::x` and `self::x` relative to the file's module.
    fn record(&mut self, segments: &[String]) {
        let Some(first) = segments.first() else {
            return;
        };
        let mut base: Vec<String> = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.module.to_vec(),
            "super" => self.module.to_vec(),
            _ => return,
        };
        let mut rest = &segments[1..];
        if first == "super" {
            base.pop();
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        base.extend(rest.iter().cloned());
        if !base.is_empty() {
            self.found.insert(base);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                self.record(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                self.record(&prefix.clone());
                prefix.pop();
            }
            syn::UseTree::Glob(_) => self.record(&prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Imports<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            _ => &[],
        };
        if is_cfg_test(attrs) {
            return;
        }
        if let syn::Item::Use(u) = item {
            self.use_tree(&mut Vec::new(), &u.tree);
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if !is_cfg_test(&f.attrs) {
            syn::visit::visit_impl_item_fn(self, f);
        }
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.record(&segments);
        syn::visit::visit_path(self, path);
    }
}

fn rank(top: &str) -> u8 {
    RANKS
        .iter()
        .find(|(m, _)| *m == top)
        .map(|(_, r)| *r)
        .unwrap_or_else(|| panic!("src/{top}: a module without a rank; add it to RANKS"))
}

/// Module-level edges `from → to` (graph nodes) with the file that makes each.
fn import_graph() -> BTreeMap<(Module, Module), PathBuf> {
    let mut edges = BTreeMap::new();
    for file in source_files() {
        let text = std::fs::read_to_string(&file.path).expect("read source");
        let ast = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.path.display()));
        let mut imports = Imports {
            module: &file.module,
            found: BTreeSet::new(),
        };
        imports.visit_file(&ast);
        let from = node_of(&file.module);
        for path in imports.found {
            let to = node_of(&path);
            if to.is_empty() || to == from {
                continue;
            }
            edges.entry((from.clone(), to)).or_insert(file.path.clone());
        }
    }
    edges
}

#[test]
fn layers_go_one_way() {
    let edges = import_graph();
    let mut picture: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for ((from, to), file) in &edges {
        let (top_from, top_to) = (&from[0], &to[0]);
        if top_from == top_to {
            continue;
        }
        picture
            .entry(top_from.clone())
            .or_default()
            .insert(top_to.clone());
        if rank(top_to) >= rank(top_from) {
            wrong.push(format!(
                "{} → {} ({}: rank {} imports rank {})",
                from.join("::"),
                to.join("::"),
                file.display(),
                rank(top_from),
                rank(top_to),
            ));
        }
    }
    let mut tops: Vec<_> = picture.into_iter().collect();
    tops.sort_by_key(|(m, _)| std::cmp::Reverse(rank(m)));
    println!("import picture (module → what it imports):");
    for (module, targets) in &tops {
        let mut targets: Vec<_> = targets.iter().collect();
        targets.sort_by_key(|t| std::cmp::Reverse(rank(t)));
        let list: Vec<&str> = targets.iter().map(|t| t.as_str()).collect();
        println!("  {module} ({}) → {}", rank(module), list.join(", "));
    }
    assert!(
        wrong.is_empty(),
        "imports running back up:\n{}",
        wrong.join("\n")
    );
}

/// Inside one module, submodules form no circle. A child's path to its parent (`super::X`,
/// an item its `mod.rs` defines or re-exports) is not an edge: the parent owns the child.
#[test]
fn no_import_circle_between_submodules() {
    let edges = import_graph();
    let mut graph: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        if from.starts_with(to) {
            continue;
        }
        graph.entry(from.clone()).or_default().insert(to.clone());
    }
    let circles = strongly_connected(&graph);
    let shown: Vec<String> = circles
        .iter()
        .map(|c| {
            c.iter()
                .map(|m| m.join("::"))
                .collect::<Vec<_>>()
                .join(" ↔ ")
        })
        .collect();
    for circle in &shown {
        println!("circle: {circle}");
    }
    assert!(shown.is_empty(), "import circles:\n{}", shown.join("\n"));
}

/// The strongly connected components of more than one node (Tarjan).
fn strongly_connected(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct State<'g> {
        graph: &'g BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<&'g Module, usize>,
        low: BTreeMap<&'g Module, usize>,
        stack: Vec<&'g Module>,
        on_stack: BTreeSet<&'g Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g Module) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            loop {
                let w = s.stack.pop().expect("on the stack");
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// A source file over [`LINES_MAX`] lines (tests included) states in its module doc why
/// it stays whole, on a line starting `//! Size:`.
#[test]
fn long_source_files_say_why() {
    let mut unexplained = Vec::new();
    for file in source_files() {
        let text = std::fs::read_to_string(&file.path).expect("read source");
        let lines = text.lines().count();
        let explained = text
            .lines()
            .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
            .any(|l| l.starts_with("//! Size:"));
        if lines > LINES_MAX && !explained {
            unexplained.push(format!("{} ({lines} lines)", file.path.display()));
        }
    }
    assert!(
        unexplained.is_empty(),
        "split these or say why in a `//! Size:` line of the module doc:\n{}",
        unexplained.join("\n")
    );
}

/// The length a source file stays under without a stated reason (issue #30).
const LINES_MAX: usize = 600;
