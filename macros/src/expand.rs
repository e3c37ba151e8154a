//! Shape checks of the annotated function and the code it expands to.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, GenericParam, Ident, ItemFn, Pat, PathArguments, ReturnType,
    Type, WherePredicate,
};

use crate::args::{Args, Returns, StrategyKind, suggest};

/// How an argument reaches the detached load.
enum Kind {
    /// `x: T`: moved.
    Owned,
    /// `x: &T`: `T::to_owned()`; the field is `T`, the second the owned type.
    Borrowed(Box<Type>, Box<Type>),
}

struct Arg {
    ident: Ident,
    ty: Type,
    kind: Kind,
}

impl Arg {
    /// The owned type that stands for this argument in a key.
    fn owned_ty(&self) -> &Type {
        match &self.kind {
            Kind::Owned => &self.ty,
            Kind::Borrowed(_, owned) => owned,
        }
    }
}

fn err(span: Span, msg: impl std::fmt::Display) -> syn::Error {
    syn::Error::new(span, msg)
}

/// Collects errors so one compile shows them all.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// What a type mentions that a static cache or a detached load cannot hold.
#[derive(Default)]
struct Scan {
    impl_trait: Option<Span>,
    lifetime: Option<(Span, String)>,
    reference: Option<Span>,
    self_ty: Option<Span>,
}

fn scan(tokens: TokenStream, out: &mut Scan) {
    let mut prev: Option<TokenTree> = None;
    let mut tokens = tokens.into_iter().peekable();
    while let Some(tt) = tokens.next() {
        match &tt {
            TokenTree::Ident(i) if i == "impl" => {
                out.impl_trait.get_or_insert(i.span());
            }
            TokenTree::Ident(i) if i == "Self" => {
                out.self_ty.get_or_insert(i.span());
            }
            TokenTree::Punct(p) if p.as_char() == '\'' => {
                if let Some(TokenTree::Ident(name)) = tokens.peek()
                    && name != "static"
                    && out.lifetime.is_none()
                {
                    out.lifetime = Some((p.span(), format!("'{name}")));
                }
            }
            TokenTree::Punct(p) if p.as_char() == '&' => {
                out.reference.get_or_insert(p.span());
            }
            TokenTree::Group(g) => {
                // `Fn(&str) -> T` and `fn(&str)` borrow nothing themselves.
                let callable = g.delimiter() == Delimiter::Parenthesis
                    && matches!(&prev, Some(TokenTree::Ident(i)) if i == "Fn" || i == "FnMut" || i == "FnOnce" || i == "fn");
                if callable {
                    let mut inner = Scan::default();
                    scan(g.stream(), &mut inner);
                    out.impl_trait = out.impl_trait.or(inner.impl_trait);
                    out.self_ty = out.self_ty.or(inner.self_ty);
                } else {
                    scan(g.stream(), out);
                }
            }
            _ => {}
        }
        prev = Some(tt);
    }
}

fn scan_ty(ty: &Type) -> Scan {
    let mut s = Scan::default();
    scan(ty.to_token_stream(), &mut s);
    s
}

/// The owned type of `&elem` in a key: `String` for `str`, `Vec<T>` for `[T]`, `T` for a sized
/// `T`, `<T as ToOwned>::Owned` for other unsized types.
fn owned_of(elem: &Type) -> Type {
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

fn is_lint_attr(a: &Attribute) -> bool {
    ["allow", "expect", "warn", "deny", "forbid"]
        .iter()
        .any(|n| a.path().is_ident(n))
}

fn is_cfg_attr(a: &Attribute) -> bool {
    a.path().is_ident("cfg") || a.path().is_ident("cfg_attr")
}

/// A lint attribute with `expect` turned into `allow`, so it is never unfulfilled on one of
/// the generated items.
fn lint_as_allow(a: &Attribute) -> Attribute {
    let mut a = a.clone();
    if a.path().is_ident("expect")
        && let syn::Meta::List(list) = &mut a.meta
    {
        list.path = syn::parse_quote_spanned!(list.path.span()=> allow);
    }
    a
}

/// `V` for a `Result`-returning fn: the first type argument of a `Result<T, ..>` spelled so,
/// else `<R as IsResult>::Ok`.
fn ok_type(ret: &Type, krate: &TokenStream) -> Type {
    if let Type::Path(p) = ret
        && let Some(seg) = p.path.segments.last()
        && seg.ident == "Result"
        && let PathArguments::AngleBracketed(a) = &seg.arguments
        && let Some(GenericArgument::Type(t)) = a.args.first()
    {
        return t.clone();
    }
    syn::parse_quote_spanned!(ret.span()=> <#ret as #krate::__private::IsResult>::Ok)
}

fn is_result_named(ret: &Type) -> bool {
    match ret {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        Type::Group(g) => is_result_named(&g.elem),
        _ => false,
    }
}

/// Does `tokens` mention the identifier `name` (also inside macro calls)?
fn mentions(tokens: TokenStream, name: &Ident) -> bool {
    tokens.into_iter().any(|tt| match tt {
        TokenTree::Ident(i) => i == *name,
        TokenTree::Group(g) => mentions(g.stream(), name),
        _ => false,
    })
}

pub fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = Args::parse(attr);
    let func = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            if let Ok(t) = syn::parse2::<syn::TraitItemFn>(item.clone()) {
                return Err(err(
                    t.sig.ident.span(),
                    "#[stampede_cached] cannot be used on a trait method declaration\nhelp: put it on an `async fn` with a body: a free function or a method of an inherent `impl`",
                ));
            }
            if let Ok(other) = syn::parse2::<syn::Item>(item)
                && !matches!(other, syn::Item::Verbatim(_))
            {
                let first = other
                    .to_token_stream()
                    .into_iter()
                    .find(|t| !matches!(t, TokenTree::Punct(p) if p.as_char() == '#'))
                    .map_or_else(Span::call_site, |t| t.span());
                return Err(err(
                    first,
                    "#[stampede_cached] applies to `async fn` items only",
                ));
            }
            return Err(e);
        }
    };
    match args {
        Ok(args) => match Expansion::new(args, func.clone()) {
            Ok(expansion) => expansion.emit(),
            Err(e) => {
                let mut out = e.to_compile_error();
                out.extend(func.to_token_stream());
                Ok(out)
            }
        },
        Err(mut e) => {
            // Also report what is wrong with the function itself, but keep the original fn so
            // that its callers do not add errors of their own.
            if let Err(more) = check_signature(&func) {
                e.combine(more);
            }
            let mut out = e.to_compile_error();
            out.extend(func.to_token_stream());
            Ok(out)
        }
    }
}

/// Signature checks that do not depend on the arguments.
fn check_signature(func: &ItemFn) -> syn::Result<()> {
    let mut errors = Errors::default();
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        errors.push(err(
            sig.fn_token.span,
            "#[stampede_cached] needs an `async fn`\nhelp: make it `async fn`; the value is loaded by a spawned task that callers await",
        ));
    }
    if let Some(c) = &sig.constness {
        errors.push(err(
            c.span,
            "#[stampede_cached] cannot be used on a `const fn`",
        ));
    }
    if let Some(u) = &sig.unsafety {
        errors.push(err(
            u.span,
            "#[stampede_cached] does not support `unsafe fn`\nhelp: keep the cached fn safe and call the unsafe code from its body",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(
            abi,
            "#[stampede_cached] does not support `extern` functions",
        ));
    }
    for p in &sig.generics.params {
        match p {
            GenericParam::Lifetime(_) => {}
            GenericParam::Type(t) => errors.push(err(
                t.ident.span(),
                format!(
                    "#[stampede_cached] does not support generic type parameters like `{}`: each function has one static cache, with one key and value type\nhelp: use concrete types, e.g. one annotated fn per type",
                    t.ident
                ),
            )),
            GenericParam::Const(c) => errors.push(err(
                c.ident.span(),
                format!(
                    "#[stampede_cached] does not support const generic parameters like `{}`\nhelp: pass it as an ordinary argument, which then becomes part of the key",
                    c.ident
                ),
            )),
        }
    }
    if let Some(w) = &sig.generics.where_clause {
        for pred in &w.predicates {
            if let WherePredicate::Type(t) = pred {
                errors.push(syn::Error::new_spanned(
                    &t.bounded_ty,
                    "#[stampede_cached] does not support `where` bounds on types\nhelp: use concrete types",
                ));
            }
        }
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        let s = scan_ty(ty);
        if let Some(span) = s.impl_trait {
            errors.push(err(
                span,
                "#[stampede_cached] cannot cache an `impl Trait` return type: the cache's static must name the value type\nhelp: return a concrete type (or `Box<dyn Trait + Send + Sync>` / `Arc<dyn ..>`)",
            ));
        } else if let Some((span, lt)) = s.lifetime {
            errors.push(err(
                span,
                format!(
                    "#[stampede_cached] cannot cache a value that borrows for `{lt}`: cached values are owned and outlive the call\nhelp: return an owned type (`String`, `Vec<T>`, `Arc<T>`)"
                ),
            ));
        } else if let Some(span) = s.reference {
            errors.push(err(
                span,
                "#[stampede_cached] cannot cache a reference: cached values are owned and outlive the call\nhelp: return an owned type (`String`, `Vec<T>`, `Arc<T>`)",
            ));
        } else if let Some(span) = s.self_ty {
            errors.push(err(
                span,
                "#[stampede_cached] cannot name `Self` in the cache's static\nhelp: write the type's name instead of `Self`",
            ));
        }
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                let shared_ref = match (&r.reference, &r.colon_token) {
                    (Some(_), None) => r.mutability.is_none(),
                    (None, Some(_)) => {
                        matches!(&*r.ty, Type::Reference(t) if t.mutability.is_none())
                    }
                    _ => false,
                };
                if !shared_ref {
                    let by_value = r.reference.is_none() && !matches!(&*r.ty, Type::Reference(_));
                    let msg = if by_value {
                        "#[stampede_cached] does not support `self` by value: each call would consume the receiver\nhelp: take `&self`; the load runs on a clone of the receiver"
                    } else {
                        "#[stampede_cached] does not support `&mut self`: the load runs detached on a clone of the receiver, so mutations would be lost\nhelp: take `&self` (and use interior mutability for state the load changes)"
                    };
                    errors.push(syn::Error::new_spanned(r, msg));
                }
            }
            FnArg::Typed(pt) => {
                match &*pt.pat {
                    Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {}
                    Pat::Wild(w) => errors.push(err(
                        w.underscore_token.span,
                        "#[stampede_cached] needs every argument to have a name: it is part of the key and is passed to the load\nhelp: name it, e.g. `_unused: T`, and `skip(_unused)` to leave it out of the key",
                    )),
                    other => errors.push(syn::Error::new_spanned(
                        other,
                        "#[stampede_cached] does not support destructuring patterns in arguments\nhelp: bind the argument to a name and destructure it in the body",
                    )),
                }
                if let Type::Reference(r) = &*pt.ty
                    && let Some(m) = &r.mutability
                {
                    errors.push(err(
                            r.and_token.span.join(m.span).unwrap_or(m.span),
                            "#[stampede_cached] does not support `&mut` arguments: the load runs detached on owned copies, so mutations would be lost\nhelp: take the argument by value or by shared reference `&T`",
                        ));
                    continue;
                }
                let s = scan_ty(&pt.ty);
                if let Some(span) = s.impl_trait {
                    errors.push(err(
                        span,
                        "#[stampede_cached] does not support `impl Trait` arguments: they make the function generic, and it has one static cache\nhelp: take a concrete type",
                    ));
                    continue;
                }
                let inner = match &*pt.ty {
                    Type::Reference(r) => scan_ty(&r.elem),
                    _ => s,
                };
                if let Some((span, lt)) = inner.lifetime {
                    errors.push(err(
                        span,
                        format!(
                            "#[stampede_cached] cannot move an argument that borrows for `{lt}` into the detached load\nhelp: take an owned type, or `&T` where `T: ToOwned` (`&str`, `&[T]`, `&Path`, `&MyCloneType`)"
                        ),
                    ));
                } else if let Some(span) = inner.reference {
                    errors.push(err(
                        span,
                        "#[stampede_cached] cannot move a nested reference into the detached load\nhelp: take an owned type, or `&T` where `T: ToOwned` (`&str`, `&[T]`, `&Path`, `&MyCloneType`)",
                    ));
                }
            }
        }
    }
    errors.finish()
}

struct Expansion {
    args: Args,
    func: ItemFn,
    krate: TokenStream,
    receiver: Option<Span>,
    inputs: Vec<Arg>,
    returns: Returns,
}

impl Expansion {
    fn new(args: Args, func: ItemFn) -> syn::Result<Expansion> {
        let mut errors = Errors::default();
        if let Err(e) = check_signature(&func) {
            errors.push(e);
        }
        let krate = args
            .krate
            .as_ref()
            .map_or_else(|| quote!(::stampede_cache), |p| p.to_token_stream());

        let mut receiver = None;
        let mut inputs = Vec::new();
        for input in &func.sig.inputs {
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
                    inputs.push(Arg {
                        ident: pi.ident.clone(),
                        ty: (*pt.ty).clone(),
                        kind,
                    });
                }
            }
        }

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
                        "`skip` names `{s}`, which is not an argument of `{}`\nhelp: {}{}",
                        func.sig.ident,
                        suggest(&s.to_string(), names.iter().map(String::as_str)),
                        arg_names()
                    ),
                ));
            } else if let Some(k) = &args.key
                && mentions(k.expr.to_token_stream(), s)
            {
                errors.push(err(
                        s.span(),
                        format!(
                            "`{s}` is skipped but the `key` expression uses it\nhelp: remove `{s}` from `skip`: with `key = ..`, only the expression decides the key"
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
                    let names_arg = match &k.expr {
                        syn::Expr::Path(p) if p.qself.is_none() => p
                            .path
                            .get_ident()
                            .filter(|i| inputs.iter().any(|a| a.ident == **i)),
                        _ => None,
                    };
                    if names_arg.is_none() {
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
            let key_names = args.key.as_ref().and_then(|k| match &k.expr {
                syn::Expr::Path(p) => p.path.get_ident().cloned(),
                _ => None,
            });
            for a in &inputs {
                let in_key = match &key_names {
                    Some(n) => a.ident == *n,
                    None => !args.skip.contains(&a.ident),
                };
                if in_key && let Some(span) = scan_ty(&a.ty).self_ty {
                    key_self = Some(span);
                    break;
                }
            }
        }
        if let Some(span) = key_self {
            errors.push(err(
                span,
                "#[stampede_cached] cannot name `Self` in the key type of the cache's static\nhelp: write the type's name instead of `Self`, or `skip` this argument",
            ));
        }

        let returns = match (&args.returns, &func.sig.output) {
            (Some((r, _)), _) => *r,
            (None, ReturnType::Type(_, ty)) if is_result_named(ty) => Returns::Result,
            _ => Returns::Value,
        };
        if let (Some((Returns::Result, span)), ReturnType::Default) =
            (&args.returns, &func.sig.output)
        {
            errors.push(err(
                *span,
                "`returns = \"result\"` needs a function that returns a `Result`\nhelp: remove `returns`, or declare the return type",
            ));
        }
        if args.shared && args.returns.is_none() && returns == Returns::Value {
            // nothing: values of any shape can be shared.
        }
        errors.finish()?;
        Ok(Expansion {
            args,
            func,
            krate,
            receiver,
            inputs,
            returns,
        })
    }

    fn emit(self) -> syn::Result<TokenStream> {
        let Expansion {
            args,
            func,
            krate,
            receiver,
            inputs,
            returns,
        } = self;
        let ItemFn {
            attrs,
            vis,
            sig,
            block,
        } = func;
        let fn_name = sig.ident.clone();
        let plain_name = fn_name.unraw().to_string();
        let origin = format_ident!("__stampede_cached_{}", plain_name, span = Span::call_site());
        let handle = format_ident!("{}_cache", plain_name, span = fn_name.span());
        let is_method = receiver.is_some();
        let span_ret = match &sig.output {
            ReturnType::Type(_, ty) => ty.span(),
            ReturnType::Default => fn_name.span(),
        };

        // ---- value type V
        let ret_ty: Type = match &sig.output {
            ReturnType::Type(_, ty) => (**ty).clone(),
            ReturnType::Default => syn::parse_quote!(()),
        };
        let value_ty = match returns {
            Returns::Value => ret_ty.clone(),
            Returns::Result => ok_type(&ret_ty, &krate),
        };

        // ---- key type K, key value, loader pattern, loader arguments
        let p = quote!(#krate::__private);
        let mut prelude = Vec::new();
        let key_ty: TokenStream;
        let key_value: TokenStream;
        let key_pat: TokenStream;
        let mut call_args = Vec::new();

        // An argument turned owned through `__private::<by_value>(arg)` or
        // `__private::<by_ref>::<T>(arg)`, spanned on its type so a bound error lands there.
        let own_through = |a: &Arg, by_value: &str, by_ref: &str| -> TokenStream {
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
        let own_moved = |a: &Arg| own_through(a, "moved", "owned");
        let own_key = |a: &Arg| own_through(a, "key", "key_owned");
        let pass = |a: &Arg, local: &Ident| -> TokenStream {
            match a.kind {
                Kind::Owned => quote!(#local),
                Kind::Borrowed(..) => quote!(&#local),
            }
        };

        // `key = arg` is the default key with every other argument skipped.
        let key_arg: Option<Ident> = args.key.as_ref().and_then(|k| match (&k.ty, &k.expr) {
            (None, syn::Expr::Path(p)) => p.path.get_ident().cloned(),
            _ => None,
        });
        let typed_key = args
            .key
            .as_ref()
            .and_then(|k| k.ty.as_ref().map(|ty| (k, ty)));
        match typed_key {
            Some((k, ty)) => {
                let expr = &k.expr;
                key_ty = ty.to_token_stream();
                key_value = quote_spanned!(k.span=> #p::key::<#ty>(#expr));
                key_pat = quote!(_);
                for (i, a) in inputs.iter().enumerate() {
                    let local = format_ident!("__sc_arg{}", i, span = Span::call_site());
                    let v = own_moved(a);
                    prelude.push(quote!(let #local = #v;));
                    call_args.push(pass(a, &local));
                }
            }
            None => {
                let mut key_tys = Vec::new();
                let mut key_vals = Vec::new();
                let mut key_locals = Vec::new();
                let mut skipped = Vec::new();
                for (i, a) in inputs.iter().enumerate() {
                    let local = format_ident!("__sc_arg{}", i, span = Span::call_site());
                    let skipped_here = match &key_arg {
                        Some(k) => a.ident != *k,
                        None => args.skip.contains(&a.ident),
                    };
                    if skipped_here {
                        let v = own_moved(a);
                        skipped.push(quote!(let #local = #v;));
                    } else {
                        key_tys.push(a.owned_ty().to_token_stream());
                        key_vals.push(own_key(a));
                        key_locals.push(local.clone());
                    }
                    call_args.push(pass(a, &local));
                }
                prelude.extend(skipped);
                if key_tys.len() == 1 {
                    key_ty = key_tys.remove(0);
                    key_value = key_vals.remove(0);
                    let l = &key_locals[0];
                    key_pat = quote!(#l);
                } else {
                    key_ty = quote!((#(#key_tys,)*));
                    key_value = quote!((#(#key_vals,)*));
                    key_pat = quote!((#(#key_locals,)*));
                }
            }
        }

        // ---- receiver
        let this = Ident::new("__sc_this", Span::call_site());
        let receiver_stmt = receiver.map(|span| {
            let self_tok = Ident::new("self", span);
            let self_ty = Ident::new("Self", span);
            quote_spanned!(span=> let #this = #p::receiver::<#self_ty>(#self_tok);)
        });
        let origin_call = if is_method {
            quote!(Self::#origin(&#this, #(#call_args),*))
        } else {
            quote!(#origin(#(#call_args),*))
        };
        let handle_call = if is_method {
            quote!(Self::#handle())
        } else {
            quote!(#handle())
        };
        let load_fn = match returns {
            Returns::Value => quote!(load),
            Returns::Result => quote!(try_load),
        };
        let key_local = Ident::new("__sc_key", Span::call_site());

        // ---- attributes
        let cfgs: Vec<&Attribute> = attrs.iter().filter(|a| is_cfg_attr(a)).collect();
        let lints: Vec<Attribute> = attrs
            .iter()
            .filter(|a| is_lint_attr(a))
            .map(lint_as_allow)
            .collect();
        let wrapper_attrs: Vec<Attribute> = attrs
            .iter()
            .map(|a| {
                if is_lint_attr(a) {
                    lint_as_allow(a)
                } else {
                    a.clone()
                }
            })
            .collect();

        // ---- the wrapper keeps the user's signature; `mut` bindings are the origin's business
        let mut wrapper_sig = sig.clone();
        for input in &mut wrapper_sig.inputs {
            if let FnArg::Typed(pt) = input
                && let Pat::Ident(pi) = &mut *pt.pat
            {
                pi.mutability = None;
            }
        }
        let mut origin_sig = sig.clone();
        origin_sig.ident = origin.clone();

        // ---- the cache
        let ttl = nanos(args.ttl);
        let strategy = match args.strategy {
            StrategyKind::Lock => quote!(#krate::Strategy::Lock),
            StrategyKind::Swr => {
                let stale = nanos(args.stale.unwrap_or(args.ttl));
                quote!(#krate::Strategy::Swr { stale: #p::Duration::from_nanos(#stale) })
            }
            StrategyKind::XFetch => {
                let beta = args.beta.unwrap_or(1.0);
                let beta = proc_macro2::Literal::f64_suffixed(beta);
                quote!(#krate::Strategy::XFetch { beta: #beta })
            }
        };
        let name = match &args.name {
            Some(n) => n.to_token_stream(),
            None => quote!(::core::concat!(::core::module_path!(), "::", #plain_name)),
        };
        let capacity = match args.capacity {
            Some(c) => {
                let c = proc_macro2::Literal::u64_unsuffixed(c);
                quote!(::core::option::Option::Some(#c))
            }
            None => quote!(::core::option::Option::None),
        };
        let build = if args.shared {
            let lock_ttl = match args.lock_ttl {
                Some(d) => {
                    let n = nanos(d);
                    quote!(::core::option::Option::Some(#p::Duration::from_nanos(#n)))
                }
                None => quote!(::core::option::Option::None),
            };
            quote_spanned!(span_ret=> #p::shared_cache::<#key_ty, #value_ty>(#name, #p::Duration::from_nanos(#ttl), #strategy, #capacity, #lock_ttl))
        } else {
            quote_spanned!(span_ret=> #p::cache::<#key_ty, #value_ty>(#name, #p::Duration::from_nanos(#ttl), #strategy, #capacity))
        };
        let handle_doc = if is_method {
            format!(
                "The cache behind [`Self::{plain_name}`] (generated by `#[stampede_cached]`): `invalidate(&key)`, `insert`, `get`, `stats`."
            )
        } else {
            format!(
                "The cache behind [`{plain_name}`] (generated by `#[stampede_cached]`): `invalidate(&key)`, `insert`, `get`, `stats`."
            )
        };

        // Spanned on the return type: a value or error type that cannot be cached is reported
        // there.
        // Every token of the call is spanned on the return type: a value or error type that
        // cannot be cached is reported there (and once, not once per token span).
        // The receiver and skipped arguments are cloned inside `make_loader`,
        // which the runtime calls only when a load starts: a hit clones nothing.
        let loader = respan(
            quote!(move |#key_pat| async move { #origin_call.await }),
            span_ret,
        );
        let load_fn = respan(quote!(#p::#load_fn), span_ret);
        let handle_call = respan(handle_call, span_ret);
        let key_arg = respan(quote!(#key_local), span_ret);
        let load_call = quote_spanned! {span_ret=>
            #load_fn(#handle_call, #key_arg, || {
                #receiver_stmt
                #(#prelude)*
                #loader
            }).await
        };
        let wrapper_body = quote! {
            {
                let #key_local = #key_value;
                #load_call
            }
        };

        Ok(quote! {
            #(#wrapper_attrs)*
            #vis #wrapper_sig #wrapper_body

            #(#cfgs)*
            #(#lints)*
            #[doc(hidden)]
            #[allow(clippy::too_many_arguments, clippy::used_underscore_binding)]
            #origin_sig #block

            #(#cfgs)*
            #[doc = #handle_doc]
            #[allow(dead_code, clippy::type_complexity)]
            #vis fn #handle() -> &'static #krate::Cache<#key_ty, #value_ty> {
                static CACHE: #p::LazyLock<#krate::Cache<#key_ty, #value_ty>> =
                    #p::LazyLock::new(|| #build);
                &CACHE
            }
        })
    }
}

/// `tokens` with every span set to `span`, so errors about the expression they form are
/// reported there.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(g) = &tt {
                let mut ng = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                ng.set_span(span);
                tt = TokenTree::Group(ng);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

fn nanos(d: std::time::Duration) -> proc_macro2::Literal {
    // Args::parse rejected durations beyond u64 nanoseconds.
    proc_macro2::Literal::u64_unsuffixed(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
