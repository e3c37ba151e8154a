//! The `batch` form: `async fn find_users(&self, ids: &[K]) -> Result<HashMap<K, V>, E>`.
//!
//! The fn takes one list of keys (`&[K]`, `Vec<K>` or `&Vec<K>`) and returns the rows it
//! found by key (`HashMap<K, V>`, or that in a `Result`). Its cache is a `Cache<K, Option<V>>`:
//! a key the body leaves out is cached as `None`. The wrapper looks every key up at once
//! (`Cache::try_get_many_or_load`), the body runs as the loader of the misses (possibly in
//! several calls of `max_batch` keys), and the wrapper returns the found keys.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{GenericArgument, Ident, PathArguments, Type};

use crate::args::{Args, Returns, mention};
use crate::diag::{Errors, err};
use crate::emit::respan;
use crate::key_plan::{Input, KeyPlan};
use crate::shape::{Output, scan_ty};

/// What the `batch` form adds to the plan.
pub struct Batch {
    /// The list argument.
    pub list: Ident,
    /// `K`: the element type of the list, with the user's spans.
    pub key_ty: Type,
    /// `V` of the rows `HashMap<K, V>`: the cache holds `Option<V>`.
    pub item_ty: Type,
}

/// The list argument's type, `&[K]` / `&Vec<K>` (borrowed) or `Vec<K>`: `K`, and the
/// type the body sees behind the reference (`[K]`, `Vec<K>`), if borrowed.
fn list_type(ty: &Type) -> Option<(Type, Option<Type>)> {
    match ty {
        Type::Reference(r) if r.mutability.is_none() => match &*r.elem {
            Type::Slice(s) => Some(((*s.elem).clone(), Some((*r.elem).clone()))),
            elem => vec_of(elem).map(|k| (k, Some(elem.clone()))),
        },
        Type::Paren(p) => list_type(&p.elem),
        Type::Group(g) => list_type(&g.elem),
        other => vec_of(other).map(|k| (k, None)),
    }
}

/// The type arguments of `ty` if it is a path whose last segment is `name`.
fn type_args<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last().filter(|s| s.ident == name)?;
    let PathArguments::AngleBracketed(a) = &seg.arguments else {
        return None;
    };
    a.args
        .iter()
        .map(|arg| match arg {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// `K` of `Vec<K>` (any path).
fn vec_of(ty: &Type) -> Option<Type> {
    match type_args(ty, "Vec")?.as_slice() {
        [k] => Some((*k).clone()),
        _ => None,
    }
}

/// The first type argument of a result type (`Result<T, E>`, `io::Result<T>`, an alias with
/// `returns = "result"`).
fn ok_of(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let PathArguments::AngleBracketed(a) = &p.path.segments.last()?.arguments else {
        return None;
    };
    a.args.iter().find_map(|arg| match arg {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

/// Checks a `batch` fn's argument, tags and return type, and plans its key: `K` is the
/// list's element type, and `output`'s cached value becomes `Option<V>`.
pub fn plan(
    args: &Args,
    receiver: Option<Span>,
    inputs: &[Input],
    args_span: Span,
    output: &mut Output,
    krate: &TokenStream,
) -> syn::Result<(KeyPlan, Batch)> {
    let mut errors = Errors::default();
    let list = errors.check(the_list(args, inputs, args_span));
    let item = list
        .as_ref()
        .and_then(|(a, k, _)| errors.check(rows_value(output, a, k)));
    if let Some((a, _, _)) = &list {
        check_tags(args, receiver, &a.ident, &mut errors);
    }
    errors.finish()?;
    let ((a, key_ty, elem), item) = (list.expect("checked"), item.expect("checked"));
    output.value_ty = syn::parse_quote_spanned!(item.span()=> ::core::option::Option<#item>);
    let p = quote!(#krate::__private);
    let id = &a.ident;
    let (key_value, rebind) = match &elem {
        Some(elem) => (
            quote!(#p::Keys::Borrowed(#id)),
            Some(quote!(let #id: &#elem = &#id;)),
        ),
        None => (
            quote!(#p::Keys::Owned(#id)),
            a.mutable.then(|| quote!(let mut #id = #id;)),
        ),
    };
    let key_ident = Ident::new("key", Span::call_site());
    let tags_use_key = args
        .tags
        .iter()
        .any(|e| mention(e.to_token_stream(), &key_ident).is_some());
    let plan = KeyPlan {
        key_ty: key_ty.to_token_stream(),
        key_value,
        computed: false,
        key_pat: quote!(#id),
        tags_pat: if tags_use_key {
            quote!(#key_ident)
        } else {
            quote!(_)
        },
        prelude: Vec::new(),
        rebinds: rebind.into_iter().collect(),
    };
    let batch = Batch {
        list: id.clone(),
        key_ty,
        item_ty: item,
    };
    Ok((plan, batch))
}

/// A type as written, for a message: `Result<Vec<User>, E>`, not `Result < Vec < User > , E >`.
fn shown(ty: &impl ToTokens) -> String {
    let mut text = ty.to_token_stream().to_string();
    for (from, to) in [
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        (" :: ", "::"),
        (":: ", "::"),
        ("& ", "&"),
        ("[ ", "["),
        (" ]", "]"),
        ("( ", "("),
        (" )", ")"),
    ] {
        text = text.replace(from, to);
    }
    text
}

const LIST_FORMS: &str = "`&[K]`, `Vec<K>` or `&Vec<K>`";

/// The one argument of a `batch` fn, its key type `K`, and what the body sees behind its
/// reference.
fn the_list<'a>(
    args: &Args,
    inputs: &'a [Input],
    args_span: Span,
) -> syn::Result<(&'a Input, Type, Option<Type>)> {
    let (a, extra) = match inputs {
        [] => {
            return Err(err(
                args_span,
                format!(
                    "a `batch` fn takes one argument, the list of keys to look up: {LIST_FORMS}\nhelp: add it, e.g. `ids: &[i64]`"
                ),
            ));
        }
        [a, extra @ ..] => (a, extra),
    };
    // With `skip`, the extra arguments are reported there, with the same fix.
    if let Some(second) = extra.first().filter(|_| args.skip.is_empty()) {
        let names: Vec<String> = extra.iter().map(|e| format!("`{}`", e.ident)).collect();
        return Err(err(
            second.ident.span(),
            format!(
                "a `batch` fn takes exactly one argument besides `&self`, the list of keys ({LIST_FORMS}); {} cannot be passed to the body, which is called with the missing keys only\nhelp: remove {}, and reach what the body needs through `self` (e.g. a field holding the pool), or make it part of each key (`&[(Region, i64)]`)",
                names.join(", "),
                if extra.len() == 1 { "it" } else { "them" },
            ),
        ));
    }
    let Some((key, elem)) = list_type(&a.ty) else {
        let ty = shown(&a.ty);
        return Err(syn::Error::new_spanned(
            &a.ty,
            format!(
                "the argument of a `batch` fn is the list of keys: {LIST_FORMS}, not `{ty}`\nhelp: take e.g. `{}: &[{ty}]` to look up a list of `{ty}` keys, or remove `batch` to cache one key per call",
                a.ident
            ),
        ));
    };
    if let Some(span) = scan_ty(&key).self_ty {
        return Err(err(
            span,
            "#[stampede_cached] cannot name `Self` in the key type of the cache's static\nhelp: write the type's name instead of `Self`",
        ));
    }
    Ok((a, key, elem))
}

/// `V` of the rows `HashMap<K, V>` the fn returns (or returns in a `Result`).
fn rows_value(output: &Output, list: &Input, key: &Type) -> syn::Result<Type> {
    let map = match output.returns {
        Returns::Value => Some(&output.ty),
        Returns::Result => ok_of(&output.ty),
    };
    if let Some(args) = map.and_then(|m| type_args(m, "HashMap"))
        && let [_, value] = args.as_slice()
    {
        return Ok((*value).clone());
    }
    let (key, got) = (shown(key), shown(&output.ty));
    let at = map.unwrap_or(&output.ty);
    Err(syn::Error::new_spanned(
        at,
        format!(
            "a `batch` fn returns the rows it found by key, `HashMap<K, V>` or `Result<HashMap<K, V>, E>`, not `{got}`\nhelp: return `HashMap<{key}, V>` (or `Result<HashMap<{key}, V>, E>`), written out (the cache names `V`) with std's hasher; keys of `{}` it leaves out are cached as absent",
            list.ident
        ),
    ))
}

/// A batch's tags are computed for each key on its own: they see `key` (a `&K`), not the
/// list, and not `self`.
fn check_tags(args: &Args, receiver: Option<Span>, list: &Ident, errors: &mut Errors) {
    for expr in &args.tags {
        let tokens = expr.to_token_stream();
        let help = "use `key`, the key of the entry, e.g. `tags(format!(\"user:{key}\"))`";
        if let Some(error) = crate::key_plan::self_in_tag(&tokens, receiver, help) {
            errors.push(error);
        } else if list != "key"
            && let Some(span) = mention(tokens, list)
        {
            errors.push(err(
                span,
                format!(
                    "a `tags(..)` expression of a `batch` fn is computed for each key on its own: use `key` (one element of `{list}`, as a `&K`), not `{list}`\nhelp: write e.g. `tags(format!(\"user:{{key}}\"))`"
                ),
            ));
        }
    }
}

/// `|| { <receiver clone> move |ids: Vec<K>| { <clone> async move { <body> } } }`: the
/// factory of the batch loader, which runs the body on each call's keys.
pub fn make_loader(
    batch: &Batch,
    plan: &KeyPlan,
    block: &syn::Block,
    receiver: Option<(TokenStream, TokenStream, TokenStream)>,
    at: Span,
) -> TokenStream {
    let Batch { list, key_ty, .. } = batch;
    let key_ty = respan(key_ty.to_token_stream(), key_ty.span());
    let rebinds = &plan.rebinds;
    let (clone_receiver, clone_again, borrow_receiver) = match receiver {
        Some((a, b, c)) => (Some(a), Some(b), Some(c)),
        None => (None, None, None),
    };
    quote_spanned! {at=>
        || {
            #clone_receiver
            move |#list: ::std::vec::Vec<#key_ty>| {
                #clone_again
                async move {
                    #borrow_receiver
                    #(#rebinds)*
                    #block
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(t: TokenStream) -> Type {
        syn::parse2(t).unwrap()
    }

    fn list(t: TokenStream) -> Option<(String, Option<String>)> {
        list_type(&ty(t)).map(|(k, elem)| {
            (
                k.to_token_stream().to_string(),
                elem.map(|e| e.to_token_stream().to_string()),
            )
        })
    }

    #[test]
    fn list_arguments_and_their_keys() {
        assert_eq!(
            list(quote!(&[i64])),
            Some(("i64".into(), Some("[i64]".into())))
        );
        assert_eq!(
            list(quote!(&'a [String])),
            Some(("String".into(), Some("[String]".into())))
        );
        assert_eq!(list(quote!(Vec<u64>)), Some(("u64".into(), None)));
        assert_eq!(list(quote!(std::vec::Vec<u64>)), Some(("u64".into(), None)));
        assert_eq!(
            list(quote!(&Vec<UserId>)),
            Some(("UserId".into(), Some("Vec < UserId >".into())))
        );
        assert_eq!(list(quote!(i64)), None);
        assert_eq!(list(quote!(&mut [i64])), None);
        assert_eq!(list(quote!(HashSet<i64>)), None);
        assert_eq!(list(quote!(&str)), None);
    }

    #[test]
    fn rows_are_a_hash_map_of_two_type_arguments() {
        let args = |t: TokenStream| {
            let t = ty(t);
            type_args(&t, "HashMap").map(|a| a.len())
        };
        assert_eq!(args(quote!(HashMap<i64, User>)), Some(2));
        assert_eq!(args(quote!(std::collections::HashMap<i64, User>)), Some(2));
        assert_eq!(args(quote!(HashMap<i64, User, S>)), Some(3));
        assert_eq!(args(quote!(BTreeMap<i64, User>)), None);
        let ok = |t: TokenStream| {
            let t = ty(t);
            ok_of(&t).map(|o| o.to_token_stream().to_string())
        };
        assert_eq!(
            ok(quote!(Result<HashMap<i64, User>, E>)),
            Some(quote!(HashMap<i64, User>).to_string())
        );
        assert_eq!(
            ok(quote!(Fallible<HashMap<i64, User>>)),
            Some(quote!(HashMap<i64, User>).to_string())
        );
        assert_eq!(ok(quote!(Fallible)), None);
    }
}
