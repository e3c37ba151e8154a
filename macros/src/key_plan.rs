//! The key plan: which arguments form the key, their owned types, and how every argument
//! reaches the detached load.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, Ident, Pat, Type};

use crate::args::Args;
use crate::diag::{Errors, err, suggest};
use crate::emit::respan;
use crate::shape::scan_ty;

/// How an argument reaches the detached load.
pub enum Kind {
    /// `x: T`: moved.
    Owned,
    /// `x: &T`: `T::to_owned()`; the field is `T`, the second the owned type.
    Borrowed(Box<Type>, Box<Type>),
}

/// A named argument of the function (the receiver excluded).
pub struct Input {
    pub ident: Ident,
    pub ty: Type,
    pub kind: Kind,
}

impl Input {
    /// The owned type that stands for this argument in a key.
    pub fn owned_ty(&self) -> &Type {
        match &self.kind {
            Kind::Owned => &self.ty,
            Kind::Borrowed(_, owned) => owned,
        }
    }
}

/// The owned type of `&elem` in a key: `String` for `str`, `Vec<T>` for `[T]`, `T` for a sized
/// `T`, `<T as ToOwned>::Owned` for other unsized types.
pub fn owned_of(elem: &Type) -> Type {
    match elem {
        Type::Path(p)
            if p.qself.is_none()
                && p.path.segments.len() == 1
                && p.path.segments[0].ident == "str" =>
        {
            syn::parse_quote_spanned!(elem.span()=> ::std::string::String)
        }
        Type::Slice(s) => {
            let t = &s.elem;
            syn::parse_quote_spanned!(elem.span()=> ::std::vec::Vec<#t>)
        }
        Type::Paren(p) => owned_of(&p.elem),
        Type::Path(p)
            if p.qself.is_none()
                && p.path.segments.last().is_some_and(|s| {
                    s.ident == "Path" || s.ident == "OsStr" || s.ident == "CStr"
                }) =>
        {
            syn::parse_quote_spanned!(elem.span()=> <#elem as ::std::borrow::ToOwned>::Owned)
        }
        Type::TraitObject(_) => {
            syn::parse_quote_spanned!(elem.span()=> <#elem as ::std::borrow::ToOwned>::Owned)
        }
        _ => elem.clone(),
    }
}

/// The receiver (the span of its `self`) and the named arguments of `sig`. Arguments the
/// shape checks refused (destructuring patterns) are left out.
pub fn inputs(sig: &syn::Signature) -> (Option<Span>, Vec<Input>) {
    let mut receiver = None;
    let mut inputs = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => receiver = Some(r.self_token.span),
            FnArg::Typed(pt) => {
                let Pat::Ident(pi) = &*pt.pat else { continue };
                let kind = match &*pt.ty {
                    // `&'static T` is an owned value in its own right.
                    Type::Reference(r)
                        if r.lifetime.as_ref().is_none_or(|l| l.ident != "static") =>
                    {
                        Kind::Borrowed(r.elem.clone(), Box::new(owned_of(&r.elem)))
                    }
                    _ => Kind::Owned,
                };
                inputs.push(Input {
                    ident: pi.ident.clone(),
                    ty: (*pt.ty).clone(),
                    kind,
                });
            }
        }
    }
    (receiver, inputs)
}

/// The key and the loader's arguments, as tokens of the expansion.
pub struct KeyPlan {
    /// `K` of the `Cache<K, V>`.
    pub key_ty: TokenStream,
    /// The wrapper's expression for the key.
    pub key_value: TokenStream,
    /// The pattern the loader binds the key to.
    pub key_pat: TokenStream,
    /// Statements of `make_loader` that take owned copies of the arguments not in the key.
    pub prelude: Vec<TokenStream>,
    /// The arguments of the call of the original body, in order.
    pub call_args: Vec<TokenStream>,
}

impl KeyPlan {
    /// Checks `skip` and `key` against the arguments of `fn_name` and plans the key.
    pub fn new(
        args: &Args,
        fn_name: &Ident,
        inputs: &[Input],
        krate: &TokenStream,
    ) -> syn::Result<KeyPlan> {
        check(args, fn_name, inputs)?;
        Ok(plan(args, inputs, krate))
    }
}

fn check(args: &Args, fn_name: &Ident, inputs: &[Input]) -> syn::Result<()> {
    let mut errors = Errors::default();
    let arg_names = || {
        if inputs.is_empty() {
            "the function has no arguments".to_string()
        } else {
            format!(
                "arguments: {}",
                inputs
                    .iter()
                    .map(|a| format!("`{}`", a.ident))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    for s in &args.skip {
        if s == "self" {
            errors.push(err(
                s.span(),
                "`self` is never part of the key; there is nothing to skip\nhelp: remove `self` from `skip`",
            ));
        } else if !inputs.iter().any(|a| a.ident == *s) {
            let names: Vec<String> = inputs.iter().map(|a| a.ident.to_string()).collect();
            errors.push(err(
                s.span(),
                format!(
                    "`skip` names `{s}`, which is not an argument of `{fn_name}`\nhelp: {}{}",
                    suggest(&s.to_string(), names.iter().map(String::as_str)),
                    arg_names()
                ),
            ));
        }
    }
    let mut key_self = None;
    if let Some(k) = &args.key {
        match &k.ty {
            Some(ty) => {
                let s = scan_ty(ty);
                if let Some(span) = s.impl_trait.or(s.reference).or(s.lifetime.map(|l| l.0)) {
                    errors.push(err(
                        span,
                        "the key type must be an owned, nameable type\nhelp: e.g. `key: (u64, String) = (id, region.to_owned())`",
                    ));
                }
                key_self = s.self_ty;
            }
            None => {
                if key_argument(args, inputs).is_none() {
                    errors.push(syn::Error::new_spanned(
                        &k.expr,
                        "#[stampede_cached] cannot infer the type of this `key` expression: the cache's static must name it\nhelp: annotate it: `key: Type = <expr>`, e.g. `key: String = format!(\"{id}:{region}\")`",
                    ));
                }
            }
        }
    }
    // Types that end up in the static `Cache<K, V>` cannot name `Self`.
    if key_self.is_none() && args.key.as_ref().is_none_or(|k| k.ty.is_none()) {
        key_self = inputs
            .iter()
            .filter(|a| in_key(args, a))
            .find_map(|a| scan_ty(&a.ty).self_ty);
    }
    if let Some(span) = key_self {
        errors.push(err(
            span,
            "#[stampede_cached] cannot name `Self` in the key type of the cache's static\nhelp: write the type's name instead of `Self`, or `skip` this argument",
        ));
    }
    errors.finish()
}

/// The argument `key = arg` names (an untyped key must name one).
fn key_argument<'a>(args: &Args, inputs: &'a [Input]) -> Option<&'a Input> {
    let k = args.key.as_ref().filter(|k| k.ty.is_none())?;
    let syn::Expr::Path(p) = &k.expr else {
        return None;
    };
    let id = p.path.get_ident().filter(|_| p.qself.is_none())?;
    inputs.iter().find(|a| a.ident == *id)
}

/// Whether argument `a` is part of a key formed from the arguments (`key = arg` is the
/// default key with every other argument skipped). False for every argument of a typed
/// `key: T = <expr>`.
fn in_key(args: &Args, a: &Input) -> bool {
    match &args.key {
        Some(k) if k.ty.is_some() => false,
        Some(_) => key_argument(args, std::slice::from_ref(a)).is_some(),
        None => !args.skip.contains(&a.ident),
    }
}

fn plan(args: &Args, inputs: &[Input], krate: &TokenStream) -> KeyPlan {
    let p = quote!(#krate::__private);

    // An argument turned owned through `__private::<by_value>(arg)` or
    // `__private::<by_ref>::<T>(arg)`, spanned on its type so a bound error lands there.
    let own_through = |a: &Input, by_value: &str, by_ref: &str| -> TokenStream {
        let id = &a.ident;
        match &a.kind {
            Kind::Owned => {
                let p = respan(p.clone(), a.ty.span());
                let f = Ident::new(by_value, a.ty.span());
                quote_spanned!(a.ty.span()=> #p::#f(#id))
            }
            Kind::Borrowed(elem, _) => {
                let p = respan(p.clone(), elem.span());
                let f = Ident::new(by_ref, elem.span());
                quote_spanned!(elem.span()=> #p::#f::<#elem>(#id))
            }
        }
    };
    let own_moved = |a: &Input| own_through(a, "moved", "owned");
    let own_key = |a: &Input| own_through(a, "key", "key_owned");
    let pass = |a: &Input, local: &Ident| -> TokenStream {
        match a.kind {
            Kind::Owned => quote!(#local),
            Kind::Borrowed(..) => quote!(&#local),
        }
    };
    let local = |i: usize| format_ident!("__sc_arg{}", i, span = Span::call_site());

    let mut prelude = Vec::new();
    let mut call_args = Vec::new();
    if let Some(k) = args.key.as_ref().filter(|k| k.ty.is_some()) {
        // `key: T = <expr>`: every argument is moved into the load.
        let ty = k.ty.as_ref().expect("filtered on a type");
        let expr = &k.expr;
        for (i, a) in inputs.iter().enumerate() {
            let local = local(i);
            let v = own_moved(a);
            prelude.push(quote!(let #local = #v;));
            call_args.push(pass(a, &local));
        }
        return KeyPlan {
            key_ty: ty.to_token_stream(),
            key_value: quote_spanned!(k.span=> #p::key::<#ty>(#expr)),
            key_pat: quote!(_),
            prelude,
            call_args,
        };
    }

    let mut key_tys = Vec::new();
    let mut key_vals = Vec::new();
    let mut key_locals = Vec::new();
    for (i, a) in inputs.iter().enumerate() {
        let local = local(i);
        if in_key(args, a) {
            key_tys.push(a.owned_ty().to_token_stream());
            key_vals.push(own_key(a));
            key_locals.push(local.clone());
        } else {
            let v = own_moved(a);
            prelude.push(quote!(let #local = #v;));
        }
        call_args.push(pass(a, &local));
    }
    let (key_ty, key_value, key_pat) = if key_tys.len() == 1 {
        let l = &key_locals[0];
        (key_tys.remove(0), key_vals.remove(0), quote!(#l))
    } else {
        (
            quote!((#(#key_tys,)*)),
            quote!((#(#key_vals,)*)),
            quote!((#(#key_locals,)*)),
        )
    };
    KeyPlan {
        key_ty,
        key_value,
        key_pat,
        prelude,
        call_args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(t: TokenStream) -> Type {
        syn::parse2(t).unwrap()
    }

    fn owned(t: TokenStream) -> String {
        owned_of(&ty(t)).to_token_stream().to_string()
    }

    #[test]
    fn owned_types_of_borrowed_arguments() {
        assert_eq!(
            owned(quote!(str)),
            quote!(::std::string::String).to_string()
        );
        assert_eq!(
            owned(quote!((str))),
            quote!(::std::string::String).to_string()
        );
        assert_eq!(
            owned(quote!([u32])),
            quote!(::std::vec::Vec<u32>).to_string()
        );
        assert_eq!(
            owned(quote!(std::path::Path)),
            quote!(<std::path::Path as ::std::borrow::ToOwned>::Owned).to_string()
        );
        assert_eq!(
            owned(quote!(dyn Tr)),
            quote!(<dyn Tr as ::std::borrow::ToOwned>::Owned).to_string()
        );
        assert_eq!(owned(quote!(User)), quote!(User).to_string());
    }

    fn plan_of(attr: TokenStream, f: TokenStream) -> syn::Result<KeyPlan> {
        let args = Args::parse(attr).unwrap_or_else(|e| panic!("{e}"));
        let f: syn::ItemFn = syn::parse2(f).unwrap();
        let (_, inputs) = inputs(&f.sig);
        KeyPlan::new(&args, &f.sig.ident, &inputs, &quote!(::sc))
    }

    #[test]
    fn default_key_is_the_owned_tuple_of_non_skipped_arguments() {
        let p = plan_of(
            quote!(ttl = "1s", skip(trace)),
            quote!(
                async fn f(&self, c: &str, limit: u32, trace: Tr) {}
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.key_ty.to_string(),
            quote!((::std::string::String, u32,)).to_string()
        );
        assert_eq!(
            p.key_pat.to_string(),
            quote!((__sc_arg0, __sc_arg1,)).to_string()
        );
        assert_eq!(p.prelude.len(), 1);
        assert!(p.prelude[0].to_string().contains("moved (trace)"));
        let call: Vec<String> = p.call_args.iter().map(|t| t.to_string()).collect();
        assert_eq!(call, ["& __sc_arg0", "__sc_arg1", "__sc_arg2"]);
    }

    #[test]
    fn one_argument_is_the_key_itself_and_none_is_unit() {
        let p = plan_of(
            quote!(ttl = "1s"),
            quote!(
                async fn f(id: u64) {}
            ),
        )
        .unwrap();
        assert_eq!(p.key_ty.to_string(), "u64");
        assert_eq!(p.key_pat.to_string(), "__sc_arg0");
        let p = plan_of(
            quote!(ttl = "1s"),
            quote!(
                async fn f() {}
            ),
        )
        .unwrap();
        assert_eq!(p.key_ty.to_string(), "()");
        let p = plan_of(
            quote!(ttl = "1s", key = b),
            quote!(
                async fn f(a: u8, b: u16) {}
            ),
        )
        .unwrap();
        assert_eq!(p.key_ty.to_string(), "u16");
        assert_eq!(p.prelude.len(), 1);
    }

    #[test]
    fn typed_key_moves_every_argument() {
        let p = plan_of(
            quote!(ttl = "1s", key: String = format!("{a}")),
            quote!(
                async fn f(a: u8, b: &str) {}
            ),
        )
        .unwrap();
        assert_eq!(p.key_ty.to_string(), "String");
        assert_eq!(p.key_pat.to_string(), "_");
        assert_eq!(p.prelude.len(), 2);
    }

    #[test]
    fn key_errors_are_all_reported() {
        let e = plan_of(
            quote!(ttl = "1s", skip(self, idd)),
            quote!(
                async fn f(&self, id: u64, s: Option<Self>) {}
            ),
        )
        .err()
        .unwrap();
        let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
        assert_eq!(all.len(), 3, "{all:#?}");
        assert!(all[0].starts_with("`self` is never part of the key"));
        assert!(all[1].starts_with("`skip` names `idd`, which is not an argument of `f`"));
        assert!(all[1].contains("did you mean `id`? arguments: `id`, `s`"));
        assert!(all[2].contains("cannot name `Self` in the key type"));
        // a skipped `Self` argument is fine
        assert!(
            plan_of(
                quote!(ttl = "1s", skip(s)),
                quote!(
                    async fn f(s: Option<Self>) {}
                )
            )
            .is_ok()
        );
        let e = plan_of(
            quote!(ttl = "1s", key = a.b),
            quote!(
                async fn f(a: u8) {}
            ),
        )
        .err()
        .unwrap();
        assert!(
            e.to_string()
                .contains("cannot infer the type of this `key` expression")
        );
    }
}
