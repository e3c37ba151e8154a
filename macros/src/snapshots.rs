//! Pinned expansions: every `tests/expand/<name>.rs` fixture, with each
//! `#[stampede_cached(..)]` item replaced by [`expand`]'s output and pretty-printed, must equal
//! `tests/expand/<name>.expanded.rs`. Re-bless with `STAMPEDE_EXPAND=overwrite cargo test -p
//! stampede-cache-macros` and review the diff. The ui-tests compile every fixture and every
//! `.expanded.rs`, so a pinned expansion is also one that builds.

use std::path::{Path, PathBuf};

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{File, ImplItem, Item};

use crate::expand::expand;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expand");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "rs")
                && !p.to_string_lossy().ends_with(".expanded.rs")
        })
        .collect();
    files.sort();
    files
}

/// The attribute's arguments, if `attrs` holds `#[stampede_cached(..)]` (which is removed).
fn take_attribute(attrs: &mut Vec<syn::Attribute>) -> Option<TokenStream> {
    let at = attrs
        .iter()
        .position(|a| a.path().is_ident("stampede_cached"))?;
    let attr = attrs.remove(at);
    Some(match attr.meta {
        syn::Meta::List(list) => list.tokens,
        _ => TokenStream::new(),
    })
}

/// Whether `item` is `use <path>::stampede_cached;` (unused once expanded).
fn imports_the_attribute(item: &Item) -> bool {
    let Item::Use(u) = item else { return false };
    let mut tree = &u.tree;
    loop {
        match tree {
            syn::UseTree::Path(p) => tree = &p.tree,
            syn::UseTree::Name(n) => return n.ident == "stampede_cached",
            _ => return false,
        }
    }
}

/// `file` with every annotated fn (free, or in an impl) replaced by its expansion.
fn expand_file(mut file: File) -> File {
    let mut items = Vec::new();
    for mut item in std::mem::take(&mut file.items) {
        if imports_the_attribute(&item) {
            continue;
        }
        match &mut item {
            Item::Fn(f) => {
                if let Some(args) = take_attribute(&mut f.attrs) {
                    let expanded: File = syn::parse2(expand(args, f.to_token_stream()))
                        .unwrap_or_else(|e| panic!("expansion of `{}`: {e}", f.sig.ident));
                    items.extend(expanded.items);
                    continue;
                }
            }
            Item::Impl(imp) => {
                let mut new_items = Vec::new();
                for mut impl_item in std::mem::take(&mut imp.items) {
                    if let ImplItem::Fn(f) = &mut impl_item
                        && let Some(args) = take_attribute(&mut f.attrs)
                    {
                        let tokens = expand(args, f.to_token_stream());
                        let wrapped: syn::ItemImpl = syn::parse2(quote::quote!(impl X { #tokens }))
                            .unwrap_or_else(|e| panic!("expansion of `{}`: {e}", f.sig.ident));
                        new_items.extend(wrapped.items);
                        continue;
                    }
                    new_items.push(impl_item);
                }
                imp.items = new_items;
            }
            _ => {}
        }
        items.push(item);
    }
    file.items = items;
    file
}

#[test]
fn expansions_match_their_snapshots() {
    let overwrite = std::env::var("STAMPEDE_EXPAND").is_ok_and(|v| v == "overwrite");
    let mut stale = Vec::new();
    for fixture in fixtures() {
        let source = std::fs::read_to_string(&fixture).expect("read fixture");
        let file: File =
            syn::parse_str(&source).unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
        let expanded = prettyplease::unparse(&expand_file(file));
        let snapshot = fixture.with_extension("expanded.rs");
        let pinned = std::fs::read_to_string(&snapshot).unwrap_or_default();
        if pinned != expanded {
            if overwrite {
                std::fs::write(&snapshot, &expanded).expect("write snapshot");
            } else {
                stale.push(format!(
                    "{}:\n{}",
                    snapshot.display(),
                    first_difference(&pinned, &expanded)
                ));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "expansions differ from their snapshots (re-bless with STAMPEDE_EXPAND=overwrite and review the diff):\n\n{}",
        stale.join("\n\n")
    );
}

/// The first line that differs, with its number.
fn first_difference(pinned: &str, actual: &str) -> String {
    let mut p = pinned.lines();
    let mut a = actual.lines();
    for n in 1.. {
        match (p.next(), a.next()) {
            (None, None) => break,
            (x, y) if x == y => {}
            (x, y) => {
                return format!(
                    "line {n}:\n  pinned: {}\n  actual: {}",
                    x.unwrap_or("<end>"),
                    y.unwrap_or("<end>")
                );
            }
        }
    }
    "identical lines, different line endings".into()
}

/// The macro docs' "What it expands to" shows the `inherent_method` snapshot, verbatim.
#[test]
fn the_docs_show_a_pinned_expansion() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).expect("lib.rs");
    let docs: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("///"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    let section = docs
        .iter()
        .position(|l| *l == "# What it expands to")
        .expect("a `What it expands to` section");
    let open = section
        + docs[section..]
            .iter()
            .position(|l| *l == "```text")
            .expect("a code block in it");
    let close = open
        + 1
        + docs[open + 1..]
            .iter()
            .position(|l| *l == "```")
            .expect("closed");
    let shown: Vec<&str> = docs[open + 1..close].to_vec();
    let snapshot = std::fs::read_to_string(dir.join("tests/expand/inherent_method.expanded.rs"))
        .expect("snapshot");
    // The snapshot's method is indented one level inside its `impl`.
    let pinned: Vec<String> = snapshot
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l).to_string())
        .collect();
    let found = pinned
        .windows(shown.len())
        .any(|w| w.iter().map(String::as_str).eq(shown.iter().copied()));
    assert!(
        found,
        "the docs' expansion is not a part of inherent_method.expanded.rs: update the docs from the snapshot"
    );
}
