//! The key plan: which arguments form the key, their owned types, how every argument
//! reaches the detached load, and what `tags(..)` see. Every local the plan introduces is
//! named after the argument it holds.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, Ident, Lit, Pat, Type};

use crate::args::{Args, mention};
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
    /// `mut x: T`: the body may change its copy.
    pub mutable: bool,
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
                    mutable: pi.mutability.is_some(),
                });
            }
        }
    }
    (receiver, inputs)
}

/// The key, the loader's arguments and the tags' bindings, as tokens of the expansion.
pub struct KeyPlan {
    /// `K` of the `Cache<K, V>`, with the user's spans (bounds on `K` are reported there).
    pub key_ty: TokenStream,
    /// The wrapper's expression for the key.
    pub key_value: TokenStream,
    /// Whether the key is computed by an expression of the user's, which the wrapper then
    /// checks against `key_ty` (`let key: K = <expr>;`).
    pub computed: bool,
    /// The pattern the loader binds the key to.
    pub key_pat: TokenStream,
    /// The pattern `tags(..)` closures bind `&K` to.
    pub tags_pat: TokenStream,
    /// Statements of `make_loader` that take the load's own copies of the arguments that are
    /// not in the key.
    pub prelude: Vec<TokenStream>,
    /// Statements at the start of the load that give the body its arguments as declared
    /// (`let category: &str = &category;`, `let mut n = n;`).
    pub rebinds: Vec<TokenStream>,
}

impl KeyPlan {
    /// Checks `skip`, `key` and `tags` against the arguments of `fn_name` and plans the key.
    /// `args_span` is the span of the fn's argument list.
    pub fn new(
        args: &Args,
        fn_name: &Ident,
        receiver: Option<Span>,
        inputs: &[Input],
        args_span: Span,
        krate: &TokenStream,
    ) -> syn::Result<KeyPlan> {
        let key = check(args, fn_name, inputs)?;
        check_tags(args, receiver, inputs, &key)?;
        Ok(plan(args, inputs, &key, args_span, krate))
    }
}

/// What forms the key.
enum KeySource {
    /// The listed arguments (every one not skipped, or the one `key = arg` names).
    Arguments,
    /// `key: T = <expr>`, or `key = <expr>` of a type inferred from the expression.
    Computed { ty: TokenStream },
}

fn check(args: &Args, fn_name: &Ident, inputs: &[Input]) -> syn::Result<KeySource> {
    let mut errors = Errors::default();
    check_skip(args, fn_name, inputs, &mut errors);
    let (source, mut key_self) = key_source(args, inputs, &mut errors);
    // Types that end up in the static `Cache<K, V>` cannot name `Self`.
    if key_self.is_none() && matches!(source, KeySource::Arguments) {
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
    errors.finish()?;
    Ok(source)
}

/// Every `skip` name must be an argument (and never `self`).
fn check_skip(args: &Args, fn_name: &Ident, inputs: &[Input], errors: &mut Errors) {
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
}

/// Where the key comes from (the arguments, or a `key = ..` expression of
/// a known type), and the span of a `Self` in a declared key type.
fn key_source(args: &Args, inputs: &[Input], errors: &mut Errors) -> (KeySource, Option<Span>) {
    let Some(k) = &args.key else {
        return (KeySource::Arguments, None);
    };
    match &k.ty {
        Some(ty) => {
            let s = scan_ty(ty);
            if let Some(span) = s.impl_trait.or(s.reference).or(s.lifetime.map(|l| l.0)) {
                errors.push(err(
                    span,
                    "the key type must be an owned, nameable type\nhelp: e.g. `key: (u64, String) = (id, region.to_owned())`",
                ));
            }
            let source = KeySource::Computed {
                ty: ty.to_token_stream(),
            };
            (source, s.self_ty)
        }
        None if key_argument(args, inputs).is_some() => (KeySource::Arguments, None),
        None => match infer_key_type(&k.expr, inputs) {
            Some(ty) => {
                let source = KeySource::Computed {
                    ty: respan(ty, k.expr.span()),
                };
                (source, None)
            }
            None => {
                errors.push(syn::Error::new_spanned(
                    &k.expr,
                    "#[stampede_cached] cannot tell the type of this `key` expression, and the cache's static must name it\nhelp: annotate it: `key: Type = <expr>`, e.g. `key: (u64, String) = (id, region.to_owned())`; `format!(..)`, `x.to_string()`, literals, casts and arguments need no annotation",
                ));
                (KeySource::Arguments, None)
            }
        },
    }
}

/// The type of an untyped `key = <expr>` when it is certain from the expression alone:
/// `format!(..)`, `.to_string()` → `String`; a string literal → `&'static str`; a suffixed
/// or `bool`/`char` literal; `x as T` → `T`; `x.clone()` / `x.to_owned()` / `*x` of an
/// argument → its owned type; a tuple of those.
pub fn infer_key_type(expr: &Expr, inputs: &[Input]) -> Option<TokenStream> {
    let arg = |e: &Expr| -> Option<&Input> {
        let Expr::Path(p) = e else { return None };
        let id = p.path.get_ident().filter(|_| p.qself.is_none())?;
        inputs.iter().find(|a| a.ident == *id)
    };
    let string = || quote!(::std::string::String);
    match expr {
        Expr::Macro(m) if m.mac.path.is_ident("format") => Some(string()),
        Expr::MethodCall(m) if m.method == "to_string" && m.args.is_empty() => Some(string()),
        Expr::MethodCall(m)
            if (m.method == "to_owned" || m.method == "clone") && m.args.is_empty() =>
        {
            if let Some(a) = arg(&m.receiver) {
                return Some(a.owned_ty().to_token_stream());
            }
            match &*m.receiver {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(_), ..
                }) if m.method == "to_owned" => Some(string()),
                _ => None,
            }
        }
        Expr::Call(c)
            if matches!(&*c.func, Expr::Path(p) if p.path.segments.len() >= 2
                && p.path.segments.iter().rev().nth(1).is_some_and(|s| s.ident == "String")
                && (p.path.segments.last().is_some_and(|s| s.ident == "from" || s.ident == "new"))) =>
        {
            Some(string())
        }
        Expr::Lit(ExprLit { lit, .. }) => match lit {
            Lit::Str(_) => Some(quote!(&'static str)),
            Lit::Bool(_) => Some(quote!(bool)),
            Lit::Char(_) => Some(quote!(char)),
            Lit::Int(i) if !i.suffix().is_empty() => {
                let t = Ident::new(i.suffix(), Span::call_site());
                Some(quote!(#t))
            }
            _ => None,
        },
        Expr::Cast(c) => Some(c.ty.to_token_stream()),
        Expr::Unary(u) if matches!(u.op, syn::UnOp::Deref(_)) => match arg(&u.expr)?.kind {
            Kind::Borrowed(ref elem, _) => Some(elem.to_token_stream()),
            Kind::Owned => None,
        },
        Expr::Path(_) => arg(expr).map(|a| a.owned_ty().to_token_stream()),
        Expr::Tuple(t) => {
            let parts = t
                .elems
                .iter()
                .map(|e| infer_key_type(e, inputs))
                .collect::<Option<Vec<_>>>()?;
            Some(quote!((#(#parts,)*)))
        }
        Expr::Paren(p) => infer_key_type(&p.expr, inputs),
        Expr::Group(g) => infer_key_type(&g.expr, inputs),
        _ => None,
    }
}

/// The argument `key = arg` names (`key = arg` is the default key with every other argument
/// skipped).
fn key_argument<'a>(args: &Args, inputs: &'a [Input]) -> Option<&'a Input> {
    let k = args.key.as_ref().filter(|k| k.ty.is_none())?;
    let syn::Expr::Path(p) = &k.expr else {
        return None;
    };
    let id = p.path.get_ident().filter(|_| p.qself.is_none())?;
    inputs.iter().find(|a| a.ident == *id)
}

/// Whether argument `a` is part of a key formed from the arguments. False for every
/// argument of a computed key.
fn in_key(args: &Args, a: &Input) -> bool {
    match &args.key {
        Some(_) => key_argument(args, std::slice::from_ref(a)).is_some(),
        None => !args.skip.contains(&a.ident),
    }
}

/// Tags are computed from the key when a load starts, so they may only use what the key
/// holds: the key's arguments, or `key` itself for a computed key.
fn check_tags(
    args: &Args,
    receiver: Option<Span>,
    inputs: &[Input],
    key: &KeySource,
) -> syn::Result<()> {
    let mut errors = Errors::default();
    for expr in &args.tags {
        let tokens = expr.to_token_stream();
        if let Some(error) = self_in_tag(&tokens, receiver, "use the arguments that form the key") {
            errors.push(error);
            continue;
        }
        for a in inputs {
            if matches!(key, KeySource::Computed { .. }) && a.ident == "key" {
                continue; // the tags' `key` is the key
            }
            let Some(span) = mention(tokens.clone(), &a.ident) else {
                continue;
            };
            let id = &a.ident;
            let msg = match key {
                KeySource::Computed { .. } => format!(
                    "a `tags(..)` expression cannot use the argument `{id}`: with a computed `key`, tags are computed from the key alone when a load starts\nhelp: use `key`, e.g. `tags(format!(\"user:{{key}}\"))`"
                ),
                KeySource::Arguments if in_key(args, a) => continue,
                KeySource::Arguments => format!(
                    "a `tags(..)` expression cannot use `{id}`: it is not part of the key, and tags are computed from the key when a load starts\nhelp: use the arguments that form the key, or make `{id}` part of it"
                ),
            };
            errors.push(err(span, msg));
        }
    }
    errors.finish()
}

fn plan(
    args: &Args,
    inputs: &[Input],
    key: &KeySource,
    args_span: Span,
    krate: &TokenStream,
) -> KeyPlan {
    let p = quote!(#krate::__private);
    let rebinds = rebinds(inputs);
    if let KeySource::Computed { ty } = key {
        return computed_plan(args, inputs, ty, &p, rebinds);
    }
    let mut key_tys = Vec::new();
    let mut key_vals = Vec::new();
    let mut key_names = Vec::new();
    let mut prelude = Vec::new();
    for a in inputs {
        if in_key(args, a) {
            let id = &a.ident;
            key_tys.push(a.owned_ty().to_token_stream());
            key_vals.push(own_through(&p, a, "owned_key").unwrap_or_else(|| quote!(#id)));
            key_names.push(id.clone());
        } else {
            prelude.push(to_load(&p, a));
        }
    }
    // The tags bind only the arguments their expressions use (no unused-variable warnings).
    let tag_names: Vec<TokenStream> = key_names
        .iter()
        .map(|id| {
            if tags_mention(args, id) {
                quote!(#id)
            } else {
                quote!(_)
            }
        })
        .collect();
    let (key_ty, key_value, key_pat, tags_pat) = if key_tys.len() == 1 {
        let id = &key_names[0];
        let tag = &tag_names[0];
        (
            key_tys.remove(0),
            key_vals.remove(0),
            quote!(#id),
            quote!(#tag),
        )
    } else {
        // The tuple type is spanned on the argument list: a bound it fails is reported
        // there, once.
        let mut ty = Group::new(Delimiter::Parenthesis, quote!(#(#key_tys,)*));
        ty.set_span(args_span);
        (
            TokenTree::Group(ty).into(),
            quote!((#(#key_vals,)*)),
            quote!((#(#key_names,)*)),
            quote!((#(#tag_names,)*)),
        )
    };
    KeyPlan {
        key_ty,
        key_value,
        computed: false,
        tags_pat,
        key_pat,
        prelude,
        rebinds,
    }
}

/// The plan of a `key = <expr>` key: every argument goes to the load.
fn computed_plan(
    args: &Args,
    inputs: &[Input],
    ty: &TokenStream,
    p: &TokenStream,
    rebinds: Vec<TokenStream>,
) -> KeyPlan {
    let k = args.key.as_ref().expect("a computed key");
    let key_ident = Ident::new("key", Span::call_site());
    KeyPlan {
        key_ty: ty.clone(),
        key_value: k.expr.to_token_stream(),
        computed: true,
        key_pat: quote!(_),
        tags_pat: if tags_mention(args, &key_ident) {
            quote!(#key_ident)
        } else {
            quote!(_)
        },
        prelude: inputs.iter().map(|a| to_load(p, a)).collect(),
        rebinds,
    }
}

/// Whether a `tags` expression uses `id`.
fn tags_mention(args: &Args, id: &Ident) -> bool {
    args.tags
        .iter()
        .any(|e| mention(e.to_token_stream(), id).is_some())
}

/// What the body sees: each argument as declared.
fn rebinds(inputs: &[Input]) -> Vec<TokenStream> {
    inputs
        .iter()
        .filter_map(|a| {
            let id = &a.ident;
            let m = a.mutable.then(|| quote!(mut));
            match &a.kind {
                Kind::Borrowed(elem, _) => Some(quote!(let #m #id: &#elem = &#id;)),
                Kind::Owned if a.mutable => Some(quote!(let mut #id = #id;)),
                Kind::Owned => None,
            }
        })
        .collect()
}

/// The call that gives the load (or the key) its own copy of a borrowed
/// argument, spanned on the argument's type so that a bound error lands there.
fn own_through(p: &TokenStream, a: &Input, f: &str) -> Option<TokenStream> {
    let Kind::Borrowed(elem, _) = &a.kind else {
        return None;
    };
    let id = &a.ident;
    let p = respan(p.clone(), elem.span());
    let f = Ident::new(f, elem.span());
    Some(quote_spanned!(elem.span()=> #p::#f::<#elem, _>(#id)))
}

/// An argument not in the key: moved into the load (by value) or copied
/// (by reference).
fn to_load(p: &TokenStream, a: &Input) -> TokenStream {
    let id = &a.ident;
    let v = own_through(p, a, "owned").unwrap_or_else(|| {
        let p = respan(p.clone(), a.ty.span());
        quote_spanned!(a.ty.span()=> #p::moved(#id))
    });
    quote!(let #id = #v;)
}

/// The error for a `tags(..)` expression of a method that uses `self`
/// (tags are computed from the key alone), with `help`.
pub fn self_in_tag(tokens: &TokenStream, receiver: Option<Span>, help: &str) -> Option<syn::Error> {
    receiver?;
    let span = mention(tokens.clone(), &Ident::new("self", Span::call_site()))?;
    Some(err(
        span,
        format!(
            "a `tags(..)` expression cannot use `self`: tags are computed from the key when a load starts, and the receiver is not part of the key\nhelp: {help}"
        ),
    ))
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
        let (receiver, inputs) = inputs(&f.sig);
        KeyPlan::new(
            &args,
            &f.sig.ident,
            receiver,
            &inputs,
            Span::call_site(),
            &quote!(::sc),
        )
    }

    fn strings(t: &[TokenStream]) -> Vec<String> {
        t.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn default_key_is_the_owned_tuple_of_non_skipped_arguments_named_after_them() {
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
            p.key_value.to_string(),
            quote!((::sc::__private::owned_key::<str, _>(c), limit,)).to_string()
        );
        assert_eq!(p.key_pat.to_string(), quote!((c, limit,)).to_string());
        assert_eq!(
            p.tags_pat.to_string(),
            quote!((_, _,)).to_string(),
            "no tags"
        );
        assert_eq!(
            strings(&p.prelude),
            [quote!(let trace = ::sc::__private::moved(trace);).to_string()]
        );
        assert_eq!(strings(&p.rebinds), [quote!(let c: &str = &c;).to_string()]);
    }

    #[test]
    fn one_argument_is_the_key_itself_and_none_is_unit() {
        let p = plan_of(
            quote!(ttl = "1s"),
            quote!(
                async fn f(mut id: u64) {}
            ),
        )
        .unwrap();
        assert_eq!(p.key_ty.to_string(), "u64");
        assert_eq!(p.key_pat.to_string(), "id");
        assert_eq!(strings(&p.rebinds), ["let mut id = id ;"]);
        let p = plan_of(
            quote!(ttl = "1s"),
            quote!(
                async fn f() {}
            ),
        )
        .unwrap();
        assert_eq!(p.key_ty.to_string(), "()");
        assert_eq!(p.key_pat.to_string(), "()");
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
    fn skipped_borrowed_arguments_are_copied_for_the_load() {
        let p = plan_of(
            quote!(ttl = "1s", skip(db)),
            quote!(
                async fn f(db: &Pool, id: u64) {}
            ),
        )
        .unwrap();
        assert_eq!(
            strings(&p.prelude),
            [quote!(let db = ::sc::__private::owned::<Pool, _>(db);).to_string()]
        );
        assert_eq!(
            strings(&p.rebinds),
            [quote!(let db: &Pool = &db;).to_string()]
        );
    }

    #[test]
    fn computed_key_moves_every_argument_and_tags_see_key() {
        let p = plan_of(
            quote!(ttl = "1s", key: String = format!("{a}")),
            quote!(
                async fn f(a: u8, b: &str) {}
            ),
        )
        .unwrap();
        assert_eq!(p.key_ty.to_string(), "String");
        assert_eq!(p.key_pat.to_string(), "_");
        assert_eq!(p.tags_pat.to_string(), "_", "no tags");
        assert_eq!(p.prelude.len(), 2);
    }

    fn inferred(expr: TokenStream) -> Option<String> {
        let f: syn::ItemFn = syn::parse2(quote!(
            async fn f(id: u64, name: &str, user: &User) {}
        ))
        .unwrap();
        let (_, inputs) = inputs(&f.sig);
        infer_key_type(&syn::parse2(expr).unwrap(), &inputs).map(|t| t.to_string())
    }

    #[test]
    fn key_types_are_inferred_where_certain() {
        let string = Some(quote!(::std::string::String).to_string());
        assert_eq!(inferred(quote!(format!("{id}:{name}"))), string);
        assert_eq!(inferred(quote!(id.to_string())), string);
        assert_eq!(inferred(quote!(name.to_owned())), string);
        assert_eq!(inferred(quote!("x".to_owned())), string);
        assert_eq!(inferred(quote!(String::from(name))), string);
        assert_eq!(inferred(quote!(user.clone())), Some("User".into()));
        assert_eq!(inferred(quote!(*user)), Some("User".into()));
        assert_eq!(inferred(quote!(id)), Some("u64".into()));
        assert_eq!(inferred(quote!(id as i64)), Some("i64".into()));
        assert_eq!(inferred(quote!(7u32)), Some("u32".into()));
        assert_eq!(
            inferred(quote!("all")),
            Some(quote!(&'static str).to_string())
        );
        assert_eq!(
            inferred(quote!((id, name.to_string()))),
            Some(quote!((u64, ::std::string::String,)).to_string())
        );
        // not certain
        assert_eq!(inferred(quote!(7)), None);
        assert_eq!(inferred(quote!(id + 1)), None);
        assert_eq!(inferred(quote!(user.id)), None);
        assert_eq!(inferred(quote!(hash(name))), None);
        assert_eq!(inferred(quote!((id, id + 1))), None);
    }

    fn errors_of(attr: TokenStream, f: TokenStream) -> Vec<String> {
        match plan_of(attr, f) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn key_errors_are_all_reported() {
        let all = errors_of(
            quote!(ttl = "1s", skip(self, idd)),
            quote!(
                async fn f(&self, id: u64, s: Option<Self>) {}
            ),
        );
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
        let e = errors_of(
            quote!(ttl = "1s", key = a.b),
            quote!(
                async fn f(a: u8) {}
            ),
        );
        assert!(e[0].contains("cannot tell the type of this `key` expression"));
    }

    #[test]
    fn tags_use_only_what_the_key_holds() {
        let ok = |attr, f| {
            plan_of(attr, f)
                .map(|_| ())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        ok(
            quote!(ttl = "1s", skip(trace), tags(format!("c:{c}"), c.clone())),
            quote!(
                async fn f(&self, c: &str, trace: u8) {}
            ),
        );
        let p = plan_of(
            quote!(ttl = "1s", tags(format!("c:{c}"))),
            quote!(
                async fn f(c: &str, page: u32) {}
            ),
        )
        .unwrap();
        assert_eq!(p.tags_pat.to_string(), quote!((c, _,)).to_string());
        ok(
            quote!(ttl = "1s", key = format!("{a}"), tags(format!("k:{key}"))),
            quote!(
                async fn f(a: u8) {}
            ),
        );
        let e = errors_of(
            quote!(
                ttl = "1s",
                skip(trace),
                tags(format!("{trace}"), trace.to_string())
            ),
            quote!(
                async fn f(c: &str, trace: u8) {}
            ),
        );
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(
            e[0].starts_with(
                "a `tags(..)` expression cannot use `trace`: it is not part of the key"
            )
        );
        let e = errors_of(
            quote!(ttl = "1s", tags(self.tenant())),
            quote!(
                async fn f(&self, c: u8) {}
            ),
        );
        assert!(e[0].contains("cannot use `self`"), "{e:?}");
        let e = errors_of(
            quote!(ttl = "1s", key = format!("{a}"), tags(format!("{a}"))),
            quote!(
                async fn f(a: u8) {}
            ),
        );
        assert!(e[0].contains("with a computed `key`"), "{e:?}");
        // `key = b`: only `b` is in the key
        let e = errors_of(
            quote!(ttl = "1s", key = b, tags(a.to_string())),
            quote!(
                async fn f(a: u8, b: u16) {}
            ),
        );
        assert!(e[0].contains("cannot use `a`"), "{e:?}");
    }
}
