//! Emission: the wrapper that calls into the runtime with the user's body as its load, and
//! the `<fn>_cache()` handle. No decisions here: the arguments, the shape and the key plan
//! are already checked.

use std::time::Duration;

use proc_macro2::{Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::{Attribute, FnArg, Ident, Pat};

use crate::args::{Args, Returns, StrategyKind};
use crate::batch::{self, Batch};
use crate::body;
use crate::key_plan::KeyPlan;
use crate::shape::{Func, Output};

/// Everything the emitter needs, checked.
pub struct Expansion {
    pub args: Args,
    pub func: Func,
    /// Path of the runtime crate.
    pub krate: TokenStream,
    /// Span of the `self` of a method's receiver.
    pub receiver: Option<Span>,
    pub output: Output,
    pub plan: KeyPlan,
    /// The `batch` form's list argument and key type.
    pub batch: Option<Batch>,
}

impl Expansion {
    /// Whether the fn is a method of a trait impl (`trait_impl`, or rewritten by
    /// `#[async_trait]`): no `<fn>_cache()` handle can be added there.
    pub fn in_trait_impl(&self) -> bool {
        in_trait_impl(&self.args, &self.func)
    }

    pub fn emit(self) -> TokenStream {
        let handle = (!self.in_trait_impl()).then(|| self.handle());
        let wrapper = self.wrapper();
        quote!(#wrapper #handle)
    }

    /// Where the tokens of the expansion's own calls are: the fn's name. A key, value or
    /// error type that cannot be cached is reported there, once (see `__private`).
    fn at(&self) -> Span {
        self.func.sig.ident.span()
    }

    /// The fn itself: the user's signature, and a body that looks the key up, with the
    /// user's body as the load.
    fn wrapper(&self) -> TokenStream {
        let Expansion {
            func,
            krate,
            receiver,
            plan,
            ..
        } = self;
        let at = self.at();
        let p = respan(quote!(#krate::__private), at);

        // ---- the load: the user's body on the load's own copies
        let mut block = func.block.clone();
        let this_stmts = receiver
            .filter(|_| body::replace_self(&mut block))
            .map(|span| {
                let this = body::this(span);
                let self_tok = Ident::new("self", span);
                let self_ty = Ident::new("Self", span);
                (
                    quote_spanned!(span=> let #this = #p::receiver::<#self_ty>(#self_tok);),
                    // A batch loader is called once per chunk: each call clones again.
                    quote_spanned!(span=> let #this = #p::receiver::<#self_ty>(&#this);),
                    quote!(let #this = &#this;),
                )
            });
        if let Some(b) = &self.batch {
            return self.batch_wrapper(b, &block, this_stmts);
        }
        let (clone_receiver, borrow_receiver) =
            this_stmts.map(|(clone, _, borrow)| (clone, borrow)).unzip();
        let KeyPlan {
            key_ty,
            key_value,
            key_pat,
            prelude,
            rebinds,
            computed,
            ..
        } = plan;
        let key = Ident::new("key", Span::mixed_site().located_at(at));
        let key_stmt = if *computed {
            quote!(let #key: #key_ty = #key_value;)
        } else {
            quote!(let #key = #key_value;)
        };
        let make_loader = quote_spanned! {at=>
            || {
                #clone_receiver
                #(#prelude)*
                move |#key_pat| async move {
                    #borrow_receiver
                    #(#rebinds)*
                    #block
                }
            }
        };
        let lookup = self.cached(
            quote_spanned!(at=> ::core::option::Option::Some(#key)),
            make_loader,
        );
        let body = quote_spanned! {at=>
            {
                #key_stmt
                #lookup.await
            }
        };

        self.signed(body)
    }

    /// The wrapper of a `batch` fn: every key of the list looked up at once, the body the
    /// loader of the misses. `this_stmts` clone the receiver for the loader, again for each
    /// of its calls, and borrow it in the body.
    fn batch_wrapper(
        &self,
        b: &Batch,
        block: &syn::Block,
        this_stmts: Option<(TokenStream, TokenStream, TokenStream)>,
    ) -> TokenStream {
        let at = self.at();
        let keys = Ident::new("keys", Span::mixed_site().located_at(at));
        let key_value = &self.plan.key_value;
        let make_loader = batch::make_loader(b, &self.plan, block, this_stmts, at);
        let lookup = self.cached(
            quote_spanned!(at=> ::core::option::Option::Some(#keys)),
            make_loader,
        );
        self.signed(quote_spanned! {at=>
            {
                let #keys = #key_value;
                #lookup.await
            }
        })
    }

    /// The wrapper fn: the user's attributes, visibility and signature
    /// around `body` (boxed for an `#[async_trait]` method).
    fn signed(&self, body: TokenStream) -> TokenStream {
        let func = &self.func;
        let attrs = &func.attrs;
        let vis = &func.vis;
        match &func.async_trait {
            None => {
                // The wrapper keeps the user's signature; `mut` bindings are the load's.
                let mut sig = func.sig.clone();
                for input in &mut sig.inputs {
                    if let FnArg::Typed(pt) = input
                        && let Pat::Ident(pi) = &mut *pt.pat
                    {
                        pi.mutability = None;
                    }
                }
                quote!(#(#attrs)* #vis #sig #body)
            }
            Some(sig) => {
                let pin = respan(quote!(::std::boxed::Box::pin), self.at());
                quote!(#(#attrs)* #vis #sig { #pin(async move #body) })
            }
        }
    }

    /// `<fn>_cache()`: the fn's cache, for `invalidate`, `insert`, `get`, `stats`.
    pub fn handle(&self) -> TokenStream {
        let Expansion {
            func,
            krate,
            receiver,
            output,
            plan,
            ..
        } = self;
        let at = self.at();
        let p = respan(quote!(#krate::__private), at);
        let plain = func.sig.ident.unraw().to_string();
        let handle = handle_ident(func);
        // On the fn's name, as in `cached`: a type that fails a bound is reported once.
        let key_ty = respan(plan.key_ty.clone(), at);
        let value_ty = respan(output.value_ty.to_token_stream(), at);
        let vis = &func.vis;
        let cfgs: Vec<&Attribute> = func.attrs.iter().filter(|a| is_cfg_attr(a)).collect();
        let lints: Vec<Attribute> = func
            .attrs
            .iter()
            .filter(|a| is_lint_attr(a))
            .map(lint_as_allow)
            .collect();
        let doc = if receiver.is_some() {
            format!(
                "The cache behind [`Self::{plain}`] (generated by `#[stampede_cached]`): `invalidate(&key)`, `insert`, `get`, `stats`."
            )
        } else {
            format!(
                "The cache behind `{plain}` (generated by `#[stampede_cached]`): `invalidate(&key)`, `insert`, `get`, `stats`."
            )
        };
        let cache = self.cached(
            quote_spanned!(at=> ::core::option::Option::None),
            quote_spanned!(at=> #p::no_loader),
        );
        let cache = quote_spanned!(at=> #cache.cache());
        let cache_ty = respan(quote!(&'static #krate::Cache<#key_ty, #value_ty>), at);
        quote! {
            #(#cfgs)*
            #(#lints)*
            #[doc = #doc]
            #[allow(dead_code, clippy::type_complexity)]
            #vis fn #handle() -> #cache_ty {
                #cache
            }
        }
    }

    /// `__private::cached::<K, V, _, _>(tier, cell, name, configure, key, make_loader)`: the one call
    /// whose bounds check the key and value types. The fn and its handle make it with the
    /// same tokens, and share one cache: a receiver-less fn cannot call its handle (`f_cache()`
    /// or `Self::f_cache()`? it cannot tell), so both declare a cell of the fn's site.
    fn cached(&self, key: TokenStream, make_loader: TokenStream) -> TokenStream {
        let Expansion {
            args,
            func,
            krate,
            output,
            plan,
            ..
        } = self;
        let at = self.at();
        let p = respan(quote!(#krate::__private), at);
        let key_ty = respan(plan.key_ty.clone(), at);
        let value_ty = respan(output.value_ty.to_token_stream(), at);
        let ret = respan(output.ty.to_token_stream(), at);
        let err_ty = output
            .err_ty
            .as_ref()
            .map(|e| respan(e.to_token_stream(), at));
        // A batch names `V` of its `Option<V>` cache: the rows' value type.
        let item_ty = self
            .batch
            .as_ref()
            .map(|b| respan(b.item_ty.to_token_stream(), at));
        let (cached, types) = match (output.returns, item_ty) {
            (Returns::Value, None) => (quote_spanned!(at=> cached), quote!(#key_ty, #value_ty)),
            (Returns::Result, None) => (
                quote_spanned!(at=> try_cached),
                quote!(#key_ty, #value_ty, #err_ty, #ret),
            ),
            (Returns::Value, Some(item)) => (
                quote_spanned!(at=> cached_many),
                quote!(#key_ty, #item, #ret),
            ),
            (Returns::Result, Some(item)) => (
                quote_spanned!(at=> try_cached_many),
                quote!(#key_ty, #item, #err_ty, #ret),
            ),
        };
        let tier = if args.shared {
            quote_spanned!(at=> #p::Shared)
        } else {
            quote_spanned!(at=> #p::Local)
        };
        // In a trait impl the cell is the fn's own: there is no handle.
        let new = if self.in_trait_impl() {
            quote_spanned!(at=> new())
        } else {
            let site = site(&func.sig.ident);
            quote_spanned!(at=> shared(#site))
        };
        let (cell_key, cell_value) = (&key_ty, &value_ty);
        let name = self.name();
        let configure = self.configure();
        quote_spanned! {at=>
            #p::#cached::<#types, _, _>(
                #tier,
                {
                    static CACHE: #p::CacheCell<#cell_key, #cell_value> = #p::CacheCell::#new;
                    &CACHE
                },
                || #name,
                #configure,
                #key,
                #make_loader,
            )
        }
    }

    /// The cache's name: `name = ".."`, else `<Self type>::fn` for a method, else
    /// `<module>::fn`.
    fn name(&self) -> TokenStream {
        let Expansion {
            args,
            func,
            krate,
            receiver,
            ..
        } = self;
        let at = self.at();
        let p = respan(quote!(#krate::__private), at);
        let plain = func.sig.ident.unraw().to_string();
        match &args.name {
            Some(n) => quote_spanned!(at=> #p::Name::from(#n)),
            // `type_name` already starts with the module path.
            None if receiver.is_some() || self.in_trait_impl() => {
                quote_spanned!(at=> #p::method_name::<Self>(#plain))
            }
            None => {
                let suffix = format!("::{plain}");
                quote_spanned!(at=> #p::Name::from(::core::concat!(::core::module_path!(), #suffix)))
            }
        }
    }

    /// `|options| options.ttl(..)...`: one setter per argument given.
    fn configure(&self) -> TokenStream {
        let Expansion {
            args, krate, plan, ..
        } = self;
        let at = self.at();
        let p = respan(quote!(#krate::__private), at);
        let krate = respan(krate.clone(), at);
        let options = Ident::new("options", Span::mixed_site().located_at(at));
        let ttl = duration(args.ttl, &p);
        let mut setters = vec![quote_spanned!(at=> .ttl(#ttl))];
        match args.strategy {
            StrategyKind::Lock => {}
            StrategyKind::Swr => {
                let stale = duration(args.stale.unwrap_or(args.ttl), &p);
                setters
                    .push(quote_spanned!(at=> .strategy(#krate::Strategy::Swr { stale: #stale })));
            }
            StrategyKind::XFetch => {
                let beta = Literal::f64_suffixed(args.beta.unwrap_or(1.0));
                setters
                    .push(quote_spanned!(at=> .strategy(#krate::Strategy::XFetch { beta: #beta })));
            }
        }
        if let Some(c) = args.capacity {
            let c = Literal::u64_unsuffixed(c);
            setters.push(quote_spanned!(at=> .capacity(#c)));
        }
        if let Some(d) = args.jitter {
            let d = duration(d, &p);
            setters.push(quote_spanned!(at=> .jitter(#d)));
        }
        if let Some(n) = args.max_batch {
            let n = Literal::u64_unsuffixed(n);
            setters.push(quote_spanned!(at=> .max_batch(#n)));
        }
        if let Some((d, span)) = args.none_ttl {
            let none = duration(d, &p);
            // Spanned on `none_ttl`: a fn that returns no `Option` is reported there.
            let none_ttl = respan(quote!(#p::none_ttl(#none, #ttl)), span);
            setters.push(quote_spanned!(at=> .none_ttl(#none_ttl)));
        }
        if !args.tags.is_empty() {
            let pat = &plan.tags_pat;
            let tags = args.tags.iter().map(|e| {
                let span = syn::spanned::Spanned::span(e);
                let tag = respan(quote!(#p::tag), span);
                quote_spanned!(span=> #tag(#e))
            });
            setters.push(quote_spanned!(at=> .tags(|#pat| [#(#tags),*])));
        }
        setters.extend(self.failure_setters(&p));
        quote_spanned!(at=> |#options| #options #(#setters)*)
    }

    /// The setters of what happens when loads fail or hang: `fail_safe`,
    /// `soft_timeout`, `load_timeout`, and with `shared` the lock's ttl and
    /// remote failures.
    fn failure_setters(&self, p: &TokenStream) -> Vec<TokenStream> {
        let Expansion { args, output, .. } = self;
        let at = self.at();
        let mut setters = Vec::new();
        if let Some(d) = args.fail_safe {
            let d = duration(d, p);
            setters.push(quote_spanned!(at=> .fail_safe(#d)));
        }
        if let Some(d) = args.soft_timeout {
            let d = duration(d, p);
            setters.push(quote_spanned!(at=> .soft_timeout(#d)));
        }
        if let Some((d, _)) = args.load_timeout {
            let d = duration(d, p);
            let err_ty = output
                .err_ty
                .as_ref()
                .expect("load_timeout needs a result (shape check)");
            // The error type keeps its spans: one without `From<LoadTimeout>` is reported
            // on its own tokens.
            setters.push(quote_spanned!(at=> .load_timeout::<#err_ty>(#d)));
        }
        if args.shared {
            if let Some(d) = args.lock_ttl {
                let d = duration(d, p);
                setters.push(quote_spanned!(at=> .lock_ttl(#d)));
            }
            if let Some(err_ty) = &output.err_ty {
                // `E: From<RemoteLoadError> + Debug`: waiters get a failure of another
                // process; else they load again in process (see `ErrorProbe`).
                setters.push(quote_spanned! {at=>
                    .remote_errors({
                        // One of the two is picked, the other is unused.
                        #[allow(unused_imports)]
                        use #p::{NoRemoteErrors as _, RemoteErrorsFrom as _};
                        (&#p::ErrorProbe::<#err_ty>::new()).remote_errors()
                    })
                });
            }
        }
        setters
    }
}

/// See [`Expansion::in_trait_impl`].
pub fn in_trait_impl(args: &Args, func: &Func) -> bool {
    args.trait_impl.is_some() || func.async_trait.is_some()
}

fn handle_ident(func: &Func) -> Ident {
    let plain = func.sig.ident.unraw().to_string();
    format_ident!("{}_cache", plain, span = func.sig.ident.span())
}

/// The site of a fn: where it is in the source. A receiver-less fn and its handle share the
/// cache of the site.
fn site(fn_name: &Ident) -> TokenStream {
    let name = format!("::{}@", fn_name.unraw());
    quote! {
        ::core::concat!(
            ::core::module_path!(), #name, ::core::file!(), ":",
            ::core::line!(), ":", ::core::column!()
        )
    }
}

/// `Duration::from_secs(n)` or `from_millis(n)` when exact, else `from_nanos(n)`.
pub fn duration(d: Duration, p: &TokenStream) -> TokenStream {
    // Args::parse refused durations beyond u64 nanoseconds.
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let (ctor, n) = if nanos % 1_000_000_000 == 0 {
        ("from_secs", nanos / 1_000_000_000)
    } else if nanos % 1_000_000 == 0 {
        ("from_millis", nanos / 1_000_000)
    } else {
        ("from_nanos", nanos)
    };
    let ctor = Ident::new(ctor, Span::call_site());
    let n = Literal::u64_unsuffixed(n);
    quote!(#p::Duration::#ctor(#n))
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
        list.path = syn::parse_quote_spanned!(syn::spanned::Spanned::span(&list.path)=> allow);
    }
    a
}

/// `tokens` with every span set to `span`, so errors about the expression they form are
/// reported there.
pub fn respan(tokens: TokenStream, span: Span) -> TokenStream {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dur(d: Duration) -> String {
        duration(d, &quote!(p)).to_string()
    }

    #[test]
    fn durations_are_emitted_in_the_largest_exact_unit() {
        assert_eq!(
            dur(Duration::from_secs(30)),
            "p :: Duration :: from_secs (30)"
        );
        assert_eq!(
            dur(Duration::from_secs(600)),
            "p :: Duration :: from_secs (600)"
        );
        assert_eq!(
            dur(Duration::from_millis(200)),
            "p :: Duration :: from_millis (200)"
        );
        assert_eq!(
            dur(Duration::from_millis(1500)),
            "p :: Duration :: from_millis (1500)"
        );
        assert_eq!(
            dur(Duration::from_micros(5)),
            "p :: Duration :: from_nanos (5000)"
        );
        assert_eq!(
            dur(Duration::from_nanos(1)),
            "p :: Duration :: from_nanos (1)"
        );
        assert_eq!(dur(Duration::ZERO), "p :: Duration :: from_secs (0)");
        // the largest the parser lets through
        assert_eq!(
            dur(Duration::from_nanos(u64::MAX)),
            format!("p :: Duration :: from_nanos ({})", u64::MAX)
        );
    }

    #[test]
    fn expect_becomes_allow_and_other_attributes_stay() {
        let a: Attribute = syn::parse_quote!(#[expect(dead_code)]);
        assert!(is_lint_attr(&a));
        assert_eq!(
            lint_as_allow(&a).to_token_stream().to_string(),
            quote!(#[allow(dead_code)]).to_string()
        );
        let a: Attribute = syn::parse_quote!(#[deny(warnings)]);
        assert_eq!(
            lint_as_allow(&a).to_token_stream().to_string(),
            a.to_token_stream().to_string()
        );
        let a: Attribute = syn::parse_quote!(#[cfg_attr(test, inline)]);
        assert!(is_cfg_attr(&a) && !is_lint_attr(&a));
        let a: Attribute = syn::parse_quote!(#[doc = "x"]);
        assert!(!is_cfg_attr(&a) && !is_lint_attr(&a));
    }
}
