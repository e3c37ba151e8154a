//! Shape checks: is the annotated item a function the macro can cache, and what does it
//! return? Nothing here depends on how the key is formed.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use quote::ToTokens;
use quote::quote;
use syn::spanned::Spanned;
use syn::{
    Attribute, Block, Expr, FnArg, GenericArgument, GenericParam, ItemFn, Pat, PathArguments,
    ReturnType, Signature, Stmt, Token, Type, TypeParamBound, Visibility, WherePredicate,
};

use crate::args::{Args, Returns};
use crate::diag::{Errors, err};

/// The annotated function, seen as the `async fn` the user wrote.
pub struct Func {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    /// The signature of the `async fn` (for an `#[async_trait]` method: as written, before
    /// `#[async_trait]` rewrote it).
    pub sig: Signature,
    /// The body of the `async fn`.
    pub block: Block,
    /// For a method that `#[async_trait]` already rewrote: its signature as rewritten
    /// (`fn f<'life0, 'async_trait>(&'life0 self) -> Pin<Box<dyn Future<..> + Send + 'async_trait>>`),
    /// which the expansion keeps.
    pub async_trait: Option<Signature>,
}

impl Func {
    /// The item as given, for an expansion that failed.
    pub fn original(&self) -> TokenStream {
        let Func {
            attrs,
            vis,
            sig,
            block,
            async_trait,
        } = self;
        match async_trait {
            None => quote!(#(#attrs)* #vis #sig #block),
            Some(sig) => {
                quote!(#(#attrs)* #vis #sig { ::std::boxed::Box::pin(async move #block) })
            }
        }
    }
}

/// The annotated item as a function, or the error that says why it is not one.
pub fn parse_fn(item: TokenStream) -> syn::Result<Func> {
    let e = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) => {
            let ItemFn {
                attrs,
                vis,
                sig,
                block,
            } = f;
            if let Some((async_sig, body)) = async_trait_view(&sig, &block) {
                return Ok(Func {
                    attrs,
                    vis,
                    sig: async_sig,
                    block: body,
                    async_trait: Some(sig),
                });
            }
            return Ok(Func {
                attrs,
                vis,
                sig,
                block: *block,
                async_trait: None,
            });
        }
        Err(e) => e,
    };
    if let Ok(t) = syn::parse2::<syn::TraitItemFn>(item.clone()) {
        return Err(err(
            t.sig.ident.span(),
            "#[stampede_cached] cannot be used on a trait method declaration\nhelp: put it on the method of the trait's impl (with `trait_impl`), or on a free fn or inherent method",
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
        let msg = if matches!(other, syn::Item::Impl(_)) {
            "#[stampede_cached] applies to `async fn` items, not to an `impl` block\nhelp: put it on each method to cache (in a trait impl, with `trait_impl`)"
        } else {
            "#[stampede_cached] applies to `async fn` items only"
        };
        return Err(err(first, msg));
    }
    Err(e)
}

/// The `async fn` that `#[async_trait]` rewrote into `sig` and `block`, if it did: a fn that
/// is not `async`, returns `Pin<Box<dyn Future<Output = T> (+ Send) + 'async_trait>>` and
/// whose body is `Box::pin(async move { .. })`. The view has the same inputs and generics,
/// returns `T`, and its body is the async block (which `#[async_trait]` starts with
/// `let __self = self;`, and `let x = x;` for arguments taken by value).
pub fn async_trait_view(sig: &Signature, block: &Block) -> Option<(Signature, Block)> {
    if sig.asyncness.is_some() {
        return None;
    }
    let ReturnType::Type(arrow, ret) = &sig.output else {
        return None;
    };
    let output = pinned_future_output(ret)?;
    let [Stmt::Expr(Expr::Call(call), None)] = block.stmts.as_slice() else {
        return None;
    };
    let Expr::Path(callee) = &*call.func else {
        return None;
    };
    let names: Vec<String> = callee
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    if !names.ends_with(&["Box".to_string(), "pin".to_string()]) || call.args.len() != 1 {
        return None;
    }
    let Expr::Async(body) = &call.args[0] else {
        return None;
    };
    body.capture?;
    let mut view = sig.clone();
    view.asyncness = Some(Token![async](sig.fn_token.span));
    view.output = ReturnType::Type(*arrow, Box::new(output));
    Some((view, body.block.clone()))
}

/// `T` of `Pin<Box<dyn Future<Output = T> + ..>>` (any paths).
fn pinned_future_output(ty: &Type) -> Option<Type> {
    let inner = |ty: &Type, name: &str| -> Option<Type> {
        let Type::Path(p) = ty else { return None };
        let seg = p.path.segments.last()?;
        if seg.ident != name {
            return None;
        }
        let PathArguments::AngleBracketed(a) = &seg.arguments else {
            return None;
        };
        match a.args.first()? {
            GenericArgument::Type(t) if a.args.len() == 1 => Some(t.clone()),
            _ => None,
        }
    };
    let boxed = inner(ty, "Pin")?;
    let Type::TraitObject(object) = inner(&boxed, "Box")? else {
        return None;
    };
    object.bounds.iter().find_map(|b| {
        let syn::TypeParamBound::Trait(t) = b else {
            return None;
        };
        let seg = t.path.segments.last()?;
        if seg.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(a) = &seg.arguments else {
            return None;
        };
        a.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(at) if at.ident == "Output" => Some(at.ty.clone()),
            _ => None,
        })
    })
}

/// What a type mentions that a static cache or a detached load cannot hold.
#[derive(Default)]
pub struct Scan {
    pub impl_trait: Option<Span>,
    pub lifetime: Option<(Span, String)>,
    pub reference: Option<Span>,
    pub self_ty: Option<Span>,
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

/// What `ty` mentions that a cache's static or a detached load cannot hold.
pub fn scan_ty(ty: &Type) -> Scan {
    let mut s = Scan::default();
    scan(ty.to_token_stream(), &mut s);
    s
}

/// Signature checks that do not depend on the arguments.
pub fn check_signature(func: &Func) -> syn::Result<()> {
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
            // `Self: Sized` (a trait method kept out of `dyn`), `Self: 'a` (as `#[async_trait]`
            // writes) and other lifetime bounds constrain no type we name.
            let on_self = |t: &syn::PredicateType| matches!(&t.bounded_ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident("Self"));
            if let WherePredicate::Type(t) = pred
                && !on_self(t)
                && !t
                    .bounds
                    .iter()
                    .all(|b| matches!(b, TypeParamBound::Lifetime(_)))
            {
                errors.push(syn::Error::new_spanned(
                    &t.bounded_ty,
                    "#[stampede_cached] does not support `where` bounds on types\nhelp: use concrete types",
                ));
            }
        }
    }
    if let ReturnType::Type(_, ty) = &sig.output {
        check_return_type(ty, &mut errors);
    }
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => check_receiver(r, &mut errors),
            FnArg::Typed(pt) => check_argument(pt, &mut errors),
        }
    }
    errors.finish()
}

fn check_return_type(ty: &Type, errors: &mut Errors) {
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

fn check_receiver(r: &syn::Receiver, errors: &mut Errors) {
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

fn check_argument(pt: &syn::PatType, errors: &mut Errors) {
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
        return;
    }
    let s = scan_ty(&pt.ty);
    if let Some(span) = s.impl_trait {
        errors.push(err(
            span,
            "#[stampede_cached] does not support `impl Trait` arguments: they make the function generic, and it has one static cache\nhelp: take a concrete type",
        ));
        return;
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

/// What the function returns, and what of it is cached.
pub struct Output {
    pub returns: Returns,
    /// `V` of the `Cache<K, V>`: the return type, or the `Ok` type of a result.
    pub value_ty: Type,
    /// `E` of a result: its `Err` type.
    pub err_ty: Option<Type>,
    /// The return type as declared (`()` when there is none).
    pub ty: Type,
}

impl Output {
    /// Resolves `returns` for `sig` and checks the arguments that need a result.
    pub fn new(args: &Args, sig: &syn::Signature, krate: &TokenStream) -> syn::Result<Output> {
        let mut errors = Errors::default();
        let ty: Type = match &sig.output {
            ReturnType::Type(_, ty) => (**ty).clone(),
            ReturnType::Default => syn::parse_quote_spanned!(sig.ident.span()=> ()),
        };
        let declared = !matches!(sig.output, ReturnType::Default);
        let returns = match &args.returns {
            Some((r, _)) => *r,
            None if declared && is_result_named(&ty) => Returns::Result,
            None => Returns::Value,
        };
        if let Some((Returns::Result, span)) = &args.returns
            && !declared
        {
            errors.push(err(
                *span,
                "`returns = \"result\"` needs a function that returns a `Result`\nhelp: remove `returns`, or declare the return type",
            ));
        }
        if let Some((_, lt_span)) = args.load_timeout
            && returns == Returns::Value
        {
            let fix = match &args.returns {
                Some(_) => {
                    "remove `returns = \"value\"` (with it, an `Err` is cached as a value, not reported as an error)"
                }
                None if declared => {
                    "return `Result<T, E>` with `E: From<stampede_cache::LoadTimeout>` (for an alias not named `Result`, add `returns = \"result\"`)"
                }
                None => "return `Result<T, E>` with `E: From<stampede_cache::LoadTimeout>`",
            };
            errors.push(err(
                lt_span,
                format!(
                    "`load_timeout` needs a function that returns `Result<_, E>`: a timed-out load must be reported as an error\nhelp: {fix}, or remove `load_timeout`"
                ),
            ));
        }
        errors.finish()?;
        let (value_ty, err_ty) = match returns {
            Returns::Value => (ty.clone(), None),
            Returns::Result => (ok_type(&ty, krate), Some(err_type(&ty, krate))),
        };
        Ok(Output {
            returns,
            value_ty,
            err_ty,
            ty,
        })
    }
}

/// Whether `ty` is spelled as a type named `Result` (any path, any alias of that name).
pub fn is_result_named(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        Type::Group(g) => is_result_named(&g.elem),
        Type::Paren(p) => is_result_named(&p.elem),
        _ => false,
    }
}

/// `V` for a `Result`-returning fn: the first type argument of a `Result<T, ..>` spelled so,
/// else `<R as IsResult>::Ok`.
pub fn ok_type(ret: &Type, krate: &TokenStream) -> Type {
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

/// `E` for a `Result`-returning fn: the second type argument of a `Result<T, E>` spelled so,
/// else `<R as IsResult>::Err` (`io::Result<T>`, other aliases).
pub fn err_type(ret: &Type, krate: &TokenStream) -> Type {
    if let Type::Path(p) = ret
        && let Some(seg) = p.path.segments.last()
        && seg.ident == "Result"
        && let PathArguments::AngleBracketed(a) = &seg.arguments
        && a.args.len() == 2
        && let Some(GenericArgument::Type(e)) = a.args.last()
    {
        return e.clone();
    }
    syn::parse_quote_spanned!(ret.span()=> <#ret as #krate::__private::IsResult>::Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn ty(t: TokenStream) -> Type {
        syn::parse2(t).unwrap()
    }

    #[test]
    fn result_detection_by_name() {
        assert!(is_result_named(&ty(quote!(Result<u64, E>))));
        assert!(is_result_named(&ty(quote!(std::io::Result<u64>))));
        assert!(is_result_named(&ty(quote!(anyhow::Result<u64>))));
        assert!(is_result_named(&ty(quote!(::core::result::Result<(), ()>))));
        assert!(is_result_named(&ty(quote!((Result<u64, E>)))));
        assert!(!is_result_named(&ty(quote!(Option<Result<u64, E>>))));
        assert!(!is_result_named(&ty(quote!(Fallible<u64>))));
        assert!(!is_result_named(&ty(quote!(u64))));
        assert!(!is_result_named(&ty(quote!((u64, Result<u64, E>)))));
    }

    #[test]
    fn ok_type_of_a_result() {
        let krate = quote!(::stampede_cache);
        let ok = |t| ok_type(&ty(t), &krate).to_token_stream().to_string();
        assert_eq!(
            ok(quote!(Result<Option<User>, E>)),
            quote!(Option<User>).to_string()
        );
        assert_eq!(
            ok(quote!(std::io::Result<String>)),
            quote!(String).to_string()
        );
        assert_eq!(
            ok(quote!(Fallible<u64>)),
            quote!(<Fallible<u64> as ::stampede_cache::__private::IsResult>::Ok).to_string()
        );
        // `Result` without type arguments (a fully applied alias)
        assert_eq!(
            ok(quote!(my::Result)),
            quote!(<my::Result as ::stampede_cache::__private::IsResult>::Ok).to_string()
        );
    }

    #[test]
    fn err_type_of_a_result() {
        let krate = quote!(::stampede_cache);
        let err = |t| err_type(&ty(t), &krate).to_token_stream().to_string();
        assert_eq!(
            err(quote!(Result<u64, RepoError>)),
            quote!(RepoError).to_string()
        );
        assert_eq!(
            err(quote!(std::result::Result<u64, Arc<E>>)),
            quote!(Arc<E>).to_string()
        );
        assert_eq!(
            err(quote!(std::io::Result<String>)),
            quote!(<std::io::Result<String> as ::stampede_cache::__private::IsResult>::Err)
                .to_string()
        );
        assert_eq!(
            err(quote!(Fallible<u64>)),
            quote!(<Fallible<u64> as ::stampede_cache::__private::IsResult>::Err).to_string()
        );
    }

    #[test]
    fn scan_finds_what_a_static_cannot_hold() {
        let s = scan_ty(&ty(quote!(Vec<&'a str>)));
        assert_eq!(s.lifetime.map(|l| l.1).as_deref(), Some("'a"));
        assert!(s.reference.is_some());
        let s = scan_ty(&ty(quote!(&'static str)));
        assert!(s.lifetime.is_none());
        assert!(s.reference.is_some());
        assert!(scan_ty(&ty(quote!(Box<impl Fn()>))).impl_trait.is_some());
        assert!(scan_ty(&ty(quote!(Option<Self>))).self_ty.is_some());
        // a callable's own arguments borrow nothing
        let s = scan_ty(&ty(quote!(Arc<dyn Fn(&str) -> u64>)));
        assert!(s.reference.is_none() && s.lifetime.is_none());
        let s = scan_ty(&ty(quote!(fn(&'a Self))));
        assert!(s.reference.is_none() && s.lifetime.is_none());
        assert!(s.self_ty.is_some());
        let s = scan_ty(&ty(quote!(HashMap<String, u64>)));
        assert!(s.impl_trait.is_none() && s.lifetime.is_none());
        assert!(s.reference.is_none() && s.self_ty.is_none());
    }

    #[test]
    fn parse_fn_names_what_it_got() {
        assert!(
            parse_fn(quote!(
                async fn f() {}
            ))
            .is_ok()
        );
        let err = |t: TokenStream| match parse_fn(t) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        };
        assert!(
            err(quote!(
                fn f();
            ))
            .contains("trait method declaration")
        );
        assert!(
            err(quote!(
                struct S;
            ))
            .contains("applies to `async fn` items only")
        );
        assert!(err(quote!(impl S {})).contains("not to an `impl` block"));
    }

    #[test]
    fn an_async_trait_method_is_seen_as_the_async_fn_it_was() {
        let f = parse_fn(quote!(
            fn load<'life0, 'async_trait>(
                &'life0 self,
                id: u64,
            ) -> ::core::pin::Pin<
                Box<
                    dyn ::core::future::Future<Output = Option<u64>>
                        + ::core::marker::Send
                        + 'async_trait,
                >,
            >
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move {
                    let __self = self;
                    let id = id;
                    let __ret: Option<u64> = { Some(id) };
                    #[allow(unreachable_code)]
                    __ret
                })
            }
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(f.async_trait.is_some());
        assert!(f.sig.asyncness.is_some());
        assert_eq!(
            f.sig.output.to_token_stream().to_string(),
            quote!(-> Option<u64>).to_string()
        );
        assert!(
            f.block
                .to_token_stream()
                .to_string()
                .starts_with("{ let __self = self ;")
        );
        check_signature(&f).unwrap_or_else(|e| panic!("{e}"));
        // `?Send`, any paths
        let f = parse_fn(quote!(
            fn load<'a>(&'a self) -> Pin<Box<dyn Future<Output = u8> + 'a>> {
                Box::pin(async move { 1 })
            }
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(f.async_trait.is_some());
        // a fn that merely returns a boxed future is not taken for one
        let f = parse_fn(quote!(
            fn load(&self) -> Pin<Box<dyn Future<Output = u8>>> {
                let x = 1;
                Box::pin(async move { x })
            }
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(f.async_trait.is_none());
    }

    #[test]
    fn bounds_on_self_and_lifetimes_are_accepted_bounds_on_other_types_are_not() {
        let f = parse_fn(quote!(
            async fn currency(region: u16) -> String
            where
                Self: Sized,
            {
                String::new()
            }
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        check_signature(&f).unwrap_or_else(|e| panic!("{e}"));
        let f = parse_fn(quote!(
            async fn f(x: u16) -> String
            where
                u16: Copy,
            {
                String::new()
            }
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(check_signature(&f).is_err());
    }

    #[test]
    fn signature_errors_are_all_reported() {
        let f = parse_fn(quote!(
            fn f<T>(&mut self, (a, b): (u8, u8), c: &mut u8, d: impl Clone) -> &str {
                ""
            }
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let all: Vec<String> = check_signature(&f)
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(all.len(), 7, "{all:#?}");
        assert!(all[0].contains("needs an `async fn`"));
        assert!(all[1].contains("generic type parameters like `T`"));
        assert!(all[2].contains("cannot cache a reference"));
        assert!(all[3].contains("`&mut self`"));
        assert!(all[4].contains("destructuring"));
        assert!(all[5].contains("`&mut` arguments"));
        assert!(all[6].contains("`impl Trait` arguments"));
    }
}
