//! The user's body inside the load: `self` becomes the receiver's copy.
//!
//! The load is a detached task, so it cannot borrow the caller's `self`; it runs the body
//! on `this`, a `&Self` to the receiver's clone. `self` cannot be rebound, so every `self`
//! of the body is renamed, as `#[async_trait]` does: in expressions, and in macro calls
//! unless they define a `fn` (whose `self` is its own); not `self::path`, not inside nested
//! items. The new name is hygienic (`Span::mixed_site`), so it never meets a `this` of the
//! user's.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use syn::visit_mut::{self, VisitMut};
use syn::{Block, Ident, Item, Macro, Path};

/// The name the body's `self` becomes, located at `at`.
pub fn this(at: Span) -> Ident {
    Ident::new("this", Span::mixed_site().located_at(at))
}

/// Renames `self` in `block` to [`this`]; whether there was any.
pub fn replace_self(block: &mut Block) -> bool {
    let mut v = ReplaceSelf(false);
    v.visit_block_mut(block);
    v.0
}

struct ReplaceSelf(bool);

impl ReplaceSelf {
    fn ident(&mut self, i: &mut Ident) {
        if i == "self" {
            *i = this(i.span());
            self.0 = true;
        }
    }

    fn tokens(&mut self, tokens: TokenStream) -> TokenStream {
        tokens
            .into_iter()
            .map(|tt| match tt {
                TokenTree::Ident(mut i) => {
                    self.ident(&mut i);
                    TokenTree::Ident(i)
                }
                TokenTree::Group(g) => {
                    let mut new = Group::new(g.delimiter(), self.tokens(g.stream()));
                    new.set_span(g.span());
                    TokenTree::Group(new)
                }
                other => other,
            })
            .collect()
    }
}

impl VisitMut for ReplaceSelf {
    fn visit_ident_mut(&mut self, i: &mut Ident) {
        self.ident(i);
    }

    fn visit_path_mut(&mut self, p: &mut Path) {
        // `self`, but not `self::item`.
        if p.segments.len() == 1 && p.leading_colon.is_none() {
            self.ident(&mut p.segments[0].ident);
        }
        for segment in &mut p.segments {
            self.visit_path_arguments_mut(&mut segment.arguments);
        }
    }

    fn visit_item_mut(&mut self, item: &mut Item) {
        // A nested item has its own `self`; a local `macro_rules!` may mean ours.
        if let Item::Macro(m) = item
            && m.mac.path.is_ident("macro_rules")
        {
            self.visit_macro_mut(&mut m.mac);
        }
    }

    fn visit_macro_mut(&mut self, mac: &mut Macro) {
        if !defines_fn(mac.tokens.clone()) {
            mac.tokens = self.tokens(std::mem::take(&mut mac.tokens));
        }
        visit_mut::visit_path_mut(self, &mut mac.path);
    }
}

/// Whether `tokens` hold a `fn` (whose `self` would not be ours).
fn defines_fn(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => i == "fn",
        TokenTree::Group(g) => defines_fn(g.stream()),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::{ToTokens, quote};

    fn replaced(body: TokenStream) -> (String, bool) {
        let mut block: Block = syn::parse2(body).unwrap();
        let any = replace_self(&mut block);
        (block.to_token_stream().to_string(), any)
    }

    #[test]
    fn self_becomes_this_in_expressions_closures_and_macros() {
        let (out, any) = replaced(quote!({
            let n = self.count(id);
            let f = move || self.db.clone();
            println!("{}", self.name);
            n
        }));
        assert!(any);
        assert!(!out.contains("self"), "{out}");
        assert_eq!(out.matches("this").count(), 3, "{out}");
    }

    #[test]
    fn self_paths_nested_items_and_fn_defining_macros_keep_their_self() {
        let (out, any) = replaced(quote!({
            let x = self::helper();
            struct S;
            impl S {
                fn f(&self) -> &Self {
                    self
                }
            }
            m! { fn g(&self) {} }
            x
        }));
        assert!(!any, "{out}");
        assert_eq!(out.matches("self").count(), 4, "{out}");
    }

    #[test]
    fn a_body_without_self_is_left_alone() {
        let (_, any) = replaced(quote!({ id + 1 }));
        assert!(!any);
    }
}
