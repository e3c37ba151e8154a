//! Parsing and validation of the attribute arguments (the table in the `stampede_cached` docs, `macros/src/lib.rs`).
//!
//! One setter per argument checks that argument alone ([`Configuration::set_ttl`], ...);
//! [`Configuration::build`] then applies the rules between arguments. Every error is
//! collected, so one compile reports all of them.

use std::time::Duration;

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, LitStr, Path, Token, Type, UnOp};

use crate::diag::{Errors, closest, err, suggest};

/// Every argument name, in the order the error messages list them.
pub const VALID: &[&str] = &[
    "ttl",
    "strategy",
    "stale",
    "beta",
    "capacity",
    "key",
    "skip",
    "shared",
    "lock_ttl",
    "name",
    "fail_safe",
    "soft_timeout",
    "load_timeout",
    "jitter",
    "none_ttl",
    "tags",
    "batch",
    "max_batch",
    "trait_impl",
    "returns",
    "crate",
];

/// `strategy = "..."`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum StrategyKind {
    Lock,
    Swr,
    XFetch,
}

/// `returns = "..."`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Returns {
    /// Cache the whole return value.
    Value,
    /// `Ok` is cached, `Err` is shared with the flight's waiters and never cached.
    Result,
}

/// `key = <expr>` or `key: Type = <expr>`.
pub struct KeyArg {
    pub ty: Option<Type>,
    pub expr: Expr,
}

/// Validated arguments.
pub struct Args {
    pub ttl: Duration,
    pub strategy: StrategyKind,
    pub stale: Option<Duration>,
    pub beta: Option<f64>,
    pub capacity: Option<u64>,
    pub key: Option<KeyArg>,
    pub skip: Vec<Ident>,
    pub shared: bool,
    pub lock_ttl: Option<Duration>,
    pub name: Option<LitStr>,
    pub fail_safe: Option<Duration>,
    pub soft_timeout: Option<Duration>,
    /// With the span of the `load_timeout` token, for the errors that need the fn's shape.
    pub load_timeout: Option<(Duration, Span)>,
    pub jitter: Option<Duration>,
    /// With the span of the `none_ttl` token: the bound on the return type is reported there.
    pub none_ttl: Option<(Duration, Span)>,
    /// The expressions of `tags(..)`.
    pub tags: Vec<Expr>,
    /// The span of `batch`: the fn loads a list of keys at once.
    pub batch: Option<Span>,
    /// `max_batch = n` (only with `batch`).
    pub max_batch: Option<u64>,
    /// The span of `trait_impl`: the fn is a method of a trait impl.
    pub trait_impl: Option<Span>,
    pub returns: Option<(Returns, Span)>,
    pub krate: Option<Path>,
}

impl Args {
    /// Parses and validates the attribute's arguments, reporting every error at once.
    #[cfg(test)]
    pub fn parse(tokens: TokenStream) -> syn::Result<Args> {
        let (args, errors) = Args::parse_lenient(tokens);
        errors.finish()?;
        Ok(args.expect("no errors"))
    }

    /// Like [`Args::parse`], but also gives the arguments when some are wrong (an invalid
    /// value left at its default), so that the expansion can still declare the fn's
    /// `<fn>_cache()` handle: callers then see the argument errors, not a missing handle.
    /// `None` when the arguments do not even parse as a list.
    pub fn parse_lenient(tokens: TokenStream) -> (Option<Args>, Errors) {
        let mut errors = Errors::default();
        let raw: Punctuated<RawArg, Token![,]> =
            match syn::parse::Parser::parse2(Punctuated::parse_terminated, tokens) {
                Ok(raw) => raw,
                Err(e) => {
                    errors.push(e);
                    return (None, errors);
                }
            };
        let mut config = Configuration::default();
        for arg in &raw {
            errors.check(config.set(arg));
        }
        let args = config.build(&mut errors);
        (Some(args), errors)
    }
}

/// One raw `name`, `name = value`, `name(list)` or `key: Type = value`.
struct RawArg {
    name: Ident,
    ty: Option<Type>,
    value: RawValue,
}

enum RawValue {
    None,
    Expr(Expr),
    List(Span, TokenStream),
}

impl Parse for RawArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let name = if input.peek(Token![crate]) {
            let tok: Token![crate] = input.parse()?;
            Ident::new("crate", tok.span)
        } else {
            input.call(syn::ext::IdentExt::parse_any).map_err(|e| {
                syn::Error::new(
                    e.span(),
                    format!(
                        "expected an argument name\nhelp: valid arguments: {}",
                        VALID.join(", ")
                    ),
                )
            })?
        };
        let ty = if input.peek(Token![:]) && !input.peek(Token![::]) {
            input.parse::<Token![:]>()?;
            Some(input.parse::<Type>()?)
        } else {
            None
        };
        let value = if input.peek(Token![=]) {
            input.parse::<Token![=]>()?;
            if input.is_empty() || input.peek(Token![,]) {
                return Err(syn::Error::new(
                    name.span(),
                    format!("`{name} =` needs a value"),
                ));
            }
            RawValue::Expr(input.parse()?)
        } else if input.peek(syn::token::Paren) {
            let content;
            let paren = syn::parenthesized!(content in input);
            RawValue::List(paren.span.join(), content.parse()?)
        } else {
            RawValue::None
        };
        Ok(RawArg { name, ty, value })
    }
}

/// The arguments seen so far, each checked on its own. `None` for an argument that was not
/// given, or was given with an error already reported.
#[derive(Default)]
struct Configuration {
    /// Every argument name given, valid value or not.
    seen: Vec<Ident>,
    /// Valid names an unknown argument is a likely misspelling of (`tll` → `ttl`): the
    /// rules between arguments treat them as given, so the one fix is not reported twice.
    misspelt: Vec<&'static str>,
    ttl: Option<Duration>,
    strategy: Option<(StrategyKind, Span)>,
    /// Spanned on the literal.
    stale: Option<(Duration, Span)>,
    beta: Option<(f64, Span)>,
    capacity: Option<u64>,
    key: Option<KeyArg>,
    skip: Option<Vec<Ident>>,
    shared: Option<Span>,
    lock_ttl: Option<(Duration, Span)>,
    name: Option<LitStr>,
    fail_safe: Option<Duration>,
    soft_timeout: Option<(Duration, Span)>,
    load_timeout: Option<(Duration, Span)>,
    jitter: Option<Duration>,
    none_ttl: Option<(Duration, Span)>,
    tags: Option<Vec<Expr>>,
    batch: Option<Span>,
    max_batch: Option<(u64, Span)>,
    trait_impl: Option<Span>,
    returns: Option<(Returns, Span)>,
    krate: Option<Path>,
}

impl Configuration {
    /// Whether `name` was given (even with an invalid value, or misspelt).
    fn given(&self, name: &str) -> bool {
        self.seen.iter().any(|i| i == name) || self.misspelt.contains(&name)
    }

    /// Checks the name of `arg` and hands its value to the argument's setter.
    fn set(&mut self, arg: &RawArg) -> syn::Result<()> {
        let n = arg.name.to_string();
        if !VALID.contains(&n.as_str()) {
            self.misspelt.extend(closest(&n, VALID.iter().copied()));
            return Err(err(
                arg.name.span(),
                format!(
                    "unknown argument `{n}` of #[stampede_cached]\nhelp: {}valid arguments: {}",
                    suggest(&n, VALID.iter().copied()),
                    VALID.join(", ")
                ),
            ));
        }
        if self.seen.iter().any(|i| *i == n) {
            return Err(err(
                arg.name.span(),
                format!(
                    "duplicate argument `{n}`\nhelp: give `{n}` once; valid arguments: {}",
                    VALID.join(", ")
                ),
            ));
        }
        self.seen.push(arg.name.clone());
        if n == "key" {
            return self.set_key(arg.ty.clone(), &arg.value, arg.name.span());
        }
        if let Some(ty) = &arg.ty {
            return Err(syn::Error::new_spanned(
                ty,
                format!("only `key` takes a type annotation, not `{n}`\nhelp: write `{n} = ...`"),
            ));
        }
        let (value, span) = (&arg.value, arg.name.span());
        match n.as_str() {
            "ttl" => self.set_ttl(value, span),
            "strategy" => self.set_strategy(value, span),
            "stale" => self.set_stale(value, span),
            "beta" => self.set_beta(value, span),
            "capacity" => self.set_capacity(value, span),
            "skip" => self.set_skip(value, span),
            "shared" => self.set_shared(value, span),
            "lock_ttl" => self.set_lock_ttl(value, span),
            "name" => self.set_name(value, span),
            "fail_safe" => self.set_fail_safe(value, span),
            "soft_timeout" => self.set_soft_timeout(value, span),
            "load_timeout" => self.set_load_timeout(value, span),
            "jitter" => self.set_jitter(value, span),
            "none_ttl" => self.set_none_ttl(value, span),
            "tags" => self.set_tags(value, span),
            "batch" => self.set_batch(value, span),
            "max_batch" => self.set_max_batch(value, span),
            "trait_impl" => self.set_trait_impl(value, span),
            "returns" => self.set_returns(value, span),
            "crate" => self.set_crate(value, span),
            other => unreachable!("`{other}` is in VALID but has no setter"),
        }
    }

    fn set_ttl(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        let (d, lit) = duration("ttl", value, span, "\"30s\"")?;
        if d.is_zero() {
            return Err(err(
                lit,
                "`ttl` must be greater than zero\nhelp: a value that is never fresh is never served; use e.g. `ttl = \"1s\"`",
            ));
        }
        self.ttl = Some(d);
        Ok(())
    }

    fn set_strategy(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        let lit = expect_str("strategy", value, span, "\"swr\"")?;
        let kind = match lit.value().as_str() {
            "lock" => StrategyKind::Lock,
            "swr" => StrategyKind::Swr,
            "xfetch" => StrategyKind::XFetch,
            other => {
                return Err(err(
                    lit.span(),
                    format!(
                        "unknown strategy {other:?}\nhelp: {}valid strategies: \"lock\" (default), \"swr\", \"xfetch\"",
                        suggest(other, ["lock", "swr", "xfetch"])
                    ),
                ));
            }
        };
        self.strategy = Some((kind, lit.span()));
        Ok(())
    }

    fn set_stale(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        self.stale = Some(duration("stale", value, span, "\"10m\"")?);
        Ok(())
    }

    fn set_beta(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        let RawValue::Expr(e) = value else {
            return Err(err(span, "`beta` needs a value\nhelp: write `beta = 1.0`"));
        };
        match number(e) {
            Some((v, _)) if v > 0.0 && v.is_finite() => {
                self.beta = Some((v, span));
                Ok(())
            }
            Some(_) => Err(syn::Error::new_spanned(
                e,
                "`beta` must be a positive, finite number\nhelp: 1.0 is the XFetch default; larger refreshes earlier, e.g. `beta = 2.0`",
            )),
            None => Err(syn::Error::new_spanned(
                e,
                "`beta` takes a float literal\nhelp: write e.g. `beta = 1.0`",
            )),
        }
    }

    fn set_capacity(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        let RawValue::Expr(e) = value else {
            return Err(err(
                span,
                "`capacity` needs a value\nhelp: write e.g. `capacity = 10_000`",
            ));
        };
        let v = match e {
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }) => i
                .base10_parse::<u64>()
                .map_err(|_| syn::Error::new_spanned(e, "`capacity` does not fit in 64 bits"))?,
            _ => {
                return Err(syn::Error::new_spanned(
                    e,
                    "`capacity` takes an integer literal (entries per function)\nhelp: write e.g. `capacity = 10_000`",
                ));
            }
        };
        if v == 0 {
            return Err(syn::Error::new_spanned(
                e,
                "`capacity` must be greater than zero\nhelp: omit it for the default bound (stampede_cache::DEFAULT_CAPACITY entries)",
            ));
        }
        self.capacity = Some(v);
        Ok(())
    }

    fn set_key(&mut self, ty: Option<Type>, value: &RawValue, span: Span) -> syn::Result<()> {
        let RawValue::Expr(e) = value else {
            return Err(err(
                span,
                "`key` needs an expression\nhelp: write `key = id` or `key: String = format!(\"{id}:{region}\")`",
            ));
        };
        self.key = Some(KeyArg {
            ty,
            expr: e.clone(),
        });
        Ok(())
    }

    fn set_skip(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        const USAGE: &str =
            "`skip` takes a list of argument names\nhelp: write e.g. `skip(db, trace_id)`";
        let RawValue::List(list_span, list) = value else {
            return Err(err(span, USAGE));
        };
        // `parse_any`: `skip(self)` gets its own message (see the key plan).
        let names = syn::parse::Parser::parse2(
            |input: ParseStream| {
                Punctuated::<Ident, Token![,]>::parse_terminated_with(
                    input,
                    syn::ext::IdentExt::parse_any,
                )
            },
            list.clone(),
        )
        .map_err(|e| err(e.span(), USAGE))?;
        if names.is_empty() {
            return Err(err(
                *list_span,
                "`skip()` names no argument\nhelp: list arguments to leave out of the key, e.g. `skip(db)`, or remove it",
            ));
        }
        let mut errors = Errors::default();
        let mut v: Vec<Ident> = Vec::new();
        for id in names {
            if v.contains(&id) {
                errors.push(err(id.span(), format!("`{id}` is named twice in `skip`")));
            } else {
                v.push(id);
            }
        }
        errors.finish()?;
        self.skip = Some(v);
        Ok(())
    }

    fn set_shared(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        flag("shared", value)?;
        self.shared = Some(span);
        Ok(())
    }

    fn set_lock_ttl(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        let (d, lit) = duration("lock_ttl", value, span, "\"10s\"")?;
        if d.is_zero() {
            return Err(err(
                lit,
                "`lock_ttl` must be greater than zero\nhelp: it is the lease of the fleet-wide lock, e.g. `lock_ttl = \"10s\"`",
            ));
        }
        self.lock_ttl = Some((d, span));
        Ok(())
    }

    fn set_name(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        let lit = expect_str("name", value, span, "\"users.by_id\"")?;
        if lit.value().trim().is_empty() {
            return Err(err(
                lit.span(),
                "`name` must not be empty\nhelp: use a stable name such as \"users.by_id\", or omit it for `module_path!()::fn_name`",
            ));
        }
        self.name = Some(lit);
        Ok(())
    }

    fn set_fail_safe(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        let (d, lit) = duration("fail_safe", value, span, "\"10m\"")?;
        if d.is_zero() {
            return Err(err(
                lit,
                "`fail_safe` must be greater than zero\nhelp: it is how long past expiry the last good value may stand in for a failed load, e.g. `fail_safe = \"10m\"`; omit it to leave fail-safe off",
            ));
        }
        self.fail_safe = Some(d);
        Ok(())
    }

    fn set_soft_timeout(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        let (d, lit) = duration("soft_timeout", value, span, "\"200ms\"")?;
        if d.is_zero() {
            return Err(err(
                lit,
                "`soft_timeout` must be greater than zero\nhelp: it is how long a caller waits on a load before it gets the fail-safe or stale value, e.g. `soft_timeout = \"200ms\"`",
            ));
        }
        self.soft_timeout = Some((d, span));
        Ok(())
    }

    fn set_load_timeout(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        let (d, lit) = duration("load_timeout", value, span, "\"5s\"")?;
        if d.is_zero() {
            return Err(err(
                lit,
                "`load_timeout` must be greater than zero\nhelp: it is how long a load may run before it is dropped, e.g. `load_timeout = \"5s\"`; omit it to let loads run unbounded",
            ));
        }
        self.load_timeout = Some((d, span));
        Ok(())
    }

    fn set_jitter(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        // Zero is no jitter, as when it is left out.
        self.jitter = Some(duration("jitter", value, span, "\"5s\"")?.0);
        Ok(())
    }

    fn set_none_ttl(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        let (d, lit) = duration("none_ttl", value, span, "\"5s\"")?;
        if d.is_zero() {
            return Err(err(
                lit,
                "`none_ttl` must be greater than zero\nhelp: it is how long a cached `None` stays fresh, e.g. `none_ttl = \"5s\"`; omit it to cache `None` for the `ttl`",
            ));
        }
        self.none_ttl = Some((d, span));
        Ok(())
    }

    fn set_tags(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        const USAGE: &str = "`tags` takes a list of expressions over the arguments that form the key\nhelp: write e.g. `tags(format!(\"category:{category}\"))`";
        let RawValue::List(list_span, list) = value else {
            return Err(err(span, USAGE));
        };
        let exprs = syn::parse::Parser::parse2(
            Punctuated::<Expr, Token![,]>::parse_terminated,
            list.clone(),
        )
        .map_err(|e| err(e.span(), USAGE))?;
        if exprs.is_empty() {
            return Err(err(
                *list_span,
                "`tags()` names no tag\nhelp: give at least one expression, e.g. `tags(format!(\"user:{id}\"))`, or remove it",
            ));
        }
        self.tags = Some(exprs.into_iter().collect());
        Ok(())
    }

    fn set_batch(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        flag("batch", value)?;
        self.batch = Some(span);
        Ok(())
    }

    fn set_max_batch(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        let RawValue::Expr(e) = value else {
            return Err(err(
                span,
                "`max_batch` needs a value\nhelp: write e.g. `max_batch = 500` (the most keys one call of the fn's body is given)",
            ));
        };
        let v = match e {
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }) => i
                .base10_parse::<u64>()
                .map_err(|_| syn::Error::new_spanned(e, "`max_batch` does not fit in 64 bits"))?,
            _ => {
                return Err(syn::Error::new_spanned(
                    e,
                    "`max_batch` takes an integer literal (the most keys one call of the fn's body is given)\nhelp: write e.g. `max_batch = 500`",
                ));
            }
        };
        if v == 0 {
            return Err(syn::Error::new_spanned(
                e,
                "`max_batch` must be at least 1: it is the most keys one call of the fn's body is given\nhelp: write e.g. `max_batch = 500`, or omit it for the default (stampede_cache::DEFAULT_MAX_BATCH keys)",
            ));
        }
        self.max_batch = Some((v, span));
        Ok(())
    }

    fn set_trait_impl(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        flag("trait_impl", value)?;
        self.trait_impl = Some(span);
        Ok(())
    }

    fn set_returns(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        let lit = expect_str("returns", value, span, "\"result\"")?;
        let r = match lit.value().as_str() {
            "result" => Returns::Result,
            "value" => Returns::Value,
            other => {
                return Err(err(
                    lit.span(),
                    format!(
                        "unknown `returns` kind {other:?}\nhelp: {}use \"result\" (cache `Ok`, share `Err`) or \"value\" (cache whatever is returned)",
                        suggest(other, ["result", "value"])
                    ),
                ));
            }
        };
        self.returns = Some((r, lit.span()));
        Ok(())
    }

    fn set_crate(&mut self, value: &RawValue, span: Span) -> syn::Result<()> {
        const USAGE: &str =
            "`crate` takes a path\nhelp: write e.g. `crate = ::my_crate::stampede_cache`";
        let path = match value {
            RawValue::Expr(Expr::Path(p)) if p.qself.is_none() => p.path.clone(),
            RawValue::Expr(Expr::Lit(ExprLit {
                lit: Lit::Str(s), ..
            })) => s.parse::<Path>().map_err(|_| err(s.span(), USAGE))?,
            RawValue::Expr(e) => return Err(syn::Error::new_spanned(e, USAGE)),
            _ => {
                return Err(err(
                    span,
                    "`crate` needs a path\nhelp: write e.g. `crate = ::my_crate::stampede_cache`",
                ));
            }
        };
        self.krate = Some(path);
        Ok(())
    }

    /// The rules between arguments. `errors` holds what the setters reported; a rule that
    /// depends on an argument given with an invalid value is not checked (its error is
    /// already there).
    fn build(self, errors: &mut Errors) -> Args {
        if self.ttl.is_none() && !self.given("ttl") {
            errors.push(err(
                Span::call_site(),
                "#[stampede_cached] needs a `ttl`\nhelp: add how long a value stays fresh, e.g. `#[stampede_cached(ttl = \"30s\")]`",
            ));
        }

        let strategy = self.strategy.map_or(StrategyKind::Lock, |(k, _)| k);
        self.check_strategy_options(strategy, errors);
        self.check_cross_options(errors);
        self.check_batch_options(errors);

        Args {
            // A missing or invalid ttl is an error above; the default only lets the
            // expansion declare the handle.
            ttl: self.ttl.unwrap_or(Duration::from_secs(60)),
            strategy,
            stale: self.stale.map(|(d, _)| d),
            beta: self.beta.map(|(b, _)| b),
            capacity: self.capacity,
            key: self.key,
            skip: self.skip.unwrap_or_default(),
            shared: self.shared.is_some(),
            lock_ttl: self.lock_ttl.map(|(d, _)| d),
            name: self.name,
            fail_safe: self.fail_safe,
            soft_timeout: self.soft_timeout.map(|(d, _)| d),
            load_timeout: self.load_timeout,
            jitter: self.jitter,
            none_ttl: self.none_ttl,
            tags: self.tags.unwrap_or_default(),
            batch: self.batch,
            max_batch: self.max_batch.map(|(n, _)| n),
            trait_impl: self.trait_impl,
            // `returns = "value"` on a batch is an error above; the fn is then read as written.
            returns: self
                .returns
                .filter(|(r, _)| self.batch.is_none() || *r == Returns::Result),
            krate: self.krate,
        }
    }

    /// `stale`, `beta` and `soft_timeout` against the strategy.
    fn check_strategy_options(&self, strategy: StrategyKind, errors: &mut Errors) {
        let strategy_known = self.strategy.is_some() || !self.given("strategy");
        let strategy_note = |want: &str| match self.strategy {
            Some(_) => {
                format!("help: it needs `strategy = \"{want}\"`; remove it or change the strategy")
            }
            None => format!("help: add `strategy = \"{want}\"` (the default strategy is \"lock\")"),
        };
        if strategy_known {
            if let Some((_, span)) = self.stale
                && strategy != StrategyKind::Swr
            {
                errors.push(err(
                    span,
                    format!(
                        "`stale` only applies to `strategy = \"swr\"`\n{}",
                        strategy_note("swr")
                    ),
                ));
            }
            if let Some((_, span)) = self.beta
                && strategy != StrategyKind::XFetch
            {
                errors.push(err(
                    span,
                    format!(
                        "`beta` only applies to `strategy = \"xfetch\"`\n{}",
                        strategy_note("xfetch")
                    ),
                ));
            }
            if let Some((_, span)) = self.soft_timeout
                && strategy != StrategyKind::Swr
                && !self.given("fail_safe")
            {
                errors.push(err(
                    span,
                    "`soft_timeout` needs a value to serve when it fires: a caller stops waiting only if a fail-safe or stale value exists\nhelp: add `fail_safe = \"10m\"` (serve the last good value), or use `strategy = \"swr\"`",
                ));
            }
        }
    }

    /// Options that need another: `lock_ttl` needs `shared`; a `key`
    /// expression must not use a skipped argument.
    fn check_cross_options(&self, errors: &mut Errors) {
        if let Some((_, span)) = self.lock_ttl
            && self.shared.is_none()
            && !self.given("shared")
        {
            errors.push(err(
                span,
                "`lock_ttl` only applies to `shared` caches\nhelp: add `shared`, or remove `lock_ttl`",
            ));
        }

        if let (Some(k), Some(skip)) = (&self.key, &self.skip) {
            let expr = k.expr.to_token_stream();
            for s in skip.iter().filter(|s| *s != "self") {
                if mentions(expr.clone(), s) {
                    errors.push(err(
                        s.span(),
                        format!(
                            "`{s}` is skipped but the `key` expression uses it\nhelp: remove `{s}` from `skip`: with `key = ..`, only the expression decides the key"
                        ),
                    ));
                }
            }
        }
    }
}

impl Configuration {
    /// The span of the name of argument `name`, if it was given.
    fn span_of(&self, name: &str) -> Option<Span> {
        self.seen.iter().find(|i| *i == name).map(Ident::span)
    }

    /// `max_batch` needs `batch`; `key`, `skip` and `returns = "value"` do not apply to it.
    fn check_batch_options(&self, errors: &mut Errors) {
        if self.batch.is_none() {
            if let Some((_, span)) = self.max_batch
                && !self.given("batch")
            {
                errors.push(err(
                    span,
                    "`max_batch` only applies to `batch` fns\nhelp: add `batch` (the fn then takes a list of keys and returns `HashMap<K, V>`), or remove `max_batch`",
                ));
            }
            return;
        }
        if let Some(span) = self.span_of("key") {
            errors.push(err(
                span,
                "`key` does not apply to a `batch` fn: its keys are the elements of its list argument\nhelp: remove `key`; to key by something else, take a list of those keys",
            ));
        }
        if let Some(span) = self.span_of("skip") {
            errors.push(err(
                span,
                "`skip` does not apply to a `batch` fn: it takes exactly one argument, the list of keys (besides `&self`)\nhelp: remove `skip` and the arguments it names, and reach what the body needs through `self` (e.g. a field holding the pool)",
            ));
        }
        if let Some((Returns::Value, span)) = self.returns {
            errors.push(err(
                span,
                "`returns = \"value\"` does not apply to a `batch` fn: it caches the rows of each key, never an error\nhelp: remove `returns`; a `batch` fn returning `Result<HashMap<K, V>, E>` caches the rows of `Ok` and hands `Err` to the callers",
            ));
        }
    }
}

/// The string literal of `name = "..."`.
fn expect_str(name: &str, value: &RawValue, span: Span, example: &str) -> syn::Result<LitStr> {
    match value {
        RawValue::Expr(Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        })) => Ok(s.clone()),
        RawValue::Expr(e) => Err(syn::Error::new_spanned(
            e,
            format!("`{name}` takes a string literal\nhelp: write `{name} = {example}`"),
        )),
        _ => Err(err(
            span,
            format!("`{name}` needs a value\nhelp: write `{name} = {example}`"),
        )),
    }
}

/// The duration of `name = "..."`, with the span of its literal.
fn duration(
    name: &str,
    value: &RawValue,
    span: Span,
    example: &str,
) -> syn::Result<(Duration, Span)> {
    let lit = expect_str(name, value, span, example)?;
    let d =
        parse_duration(&lit.value()).map_err(|msg| err(lit.span(), format!("`{name}`: {msg}")))?;
    Ok((d, lit.span()))
}

/// Humantime text as a duration of at most `u64::MAX` nanoseconds; the error is the message
/// that follows "`name`: ".
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "cannot parse {text:?} as a duration ({e})\nhelp: use humantime syntax such as \"250ms\", \"30s\", \"5m\", \"1h\" or \"1m 30s\""
        )
    })?;
    if d.as_nanos() > u128::from(u64::MAX) {
        return Err(format!(
            "{text:?} is too long (the limit is about 584 years)"
        ));
    }
    Ok(d)
}

fn flag(name: &str, value: &RawValue) -> syn::Result<()> {
    let msg = format!("`{name}` is a flag and takes no value\nhelp: write just `{name}`");
    match value {
        RawValue::None => Ok(()),
        RawValue::Expr(e) => Err(syn::Error::new_spanned(e, msg)),
        RawValue::List(span, _) => Err(err(*span, msg)),
    }
}

/// The numeric value of a literal (optionally negated) expression, and whether it was a
/// float literal.
fn number(e: &Expr) -> Option<(f64, bool)> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) => f.base10_parse::<f64>().ok().map(|v| (v, true)),
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<f64>().ok().map(|v| (v, false)),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => number(expr).map(|(v, f)| (-v, f)),
        Expr::Group(g) => number(&g.expr),
        Expr::Paren(p) => number(&p.expr),
        _ => None,
    }
}

/// Does `tokens` mention the identifier `name` (also inside macro calls)?
pub fn mentions(tokens: TokenStream, name: &Ident) -> bool {
    mention(tokens, name).is_some()
}

/// Where `tokens` first mention the identifier `name`: the identifier itself, also inside
/// macro calls, or the string literal of a macro call that names it as an inline format
/// argument (`format!("{name}")`, `format!("{name:?}")`).
pub fn mention(tokens: TokenStream, name: &Ident) -> Option<Span> {
    mention_in(tokens, name, false)
}

fn mention_in(tokens: TokenStream, name: &Ident, in_macro: bool) -> Option<Span> {
    let mut prev_bang = false;
    for tt in tokens {
        let bang = matches!(&tt, TokenTree::Punct(p) if p.as_char() == '!');
        match tt {
            TokenTree::Ident(i) if i == *name => return Some(i.span()),
            TokenTree::Group(g) => {
                if let Some(span) = mention_in(g.stream(), name, in_macro || prev_bang) {
                    return Some(span);
                }
            }
            TokenTree::Literal(l) if in_macro => {
                if let Ok(Lit::Str(s)) = syn::parse2::<Lit>(TokenTree::Literal(l.clone()).into())
                    && names_inline_argument(&s.value(), &name.to_string())
                {
                    return Some(l.span());
                }
            }
            _ => {}
        }
        prev_bang = bang;
    }
    None
}

/// Whether the format string `text` has an inline argument `{name}` / `{name:..}`.
fn names_inline_argument(text: &str, name: &str) -> bool {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        if rest.starts_with('{') {
            rest = &rest[1..];
            continue;
        }
        let end = rest.find(['}', ':']).unwrap_or(rest.len());
        if rest[..end].trim() == name {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: TokenStream) -> Result<Args, Vec<String>> {
        Args::parse(tokens).map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

    fn errors(tokens: TokenStream) -> Vec<String> {
        match parse(tokens) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e,
        }
    }

    #[test]
    fn durations_parse_as_humantime() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 250ms "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1ns"), Ok(Duration::from_nanos(1)));
        let e = parse_duration("ten minutes").unwrap_err();
        assert!(
            e.starts_with("cannot parse \"ten minutes\" as a duration ("),
            "{e}"
        );
        assert!(e.contains("help: use humantime syntax"), "{e}");
        assert!(parse_duration("").is_err());
        assert!(
            parse_duration("600years")
                .unwrap_err()
                .contains("is too long")
        );
        assert!(parse_duration("500years").is_ok());
    }

    #[test]
    fn numbers_of_literals() {
        let n = |e: Expr| number(&e);
        assert_eq!(n(syn::parse_quote!(1.5)), Some((1.5, true)));
        assert_eq!(n(syn::parse_quote!(2)), Some((2.0, false)));
        assert_eq!(n(syn::parse_quote!(-1.0)), Some((-1.0, true)));
        assert_eq!(n(syn::parse_quote!((3.0))), Some((3.0, true)));
        assert_eq!(n(syn::parse_quote!(x)), None);
        assert_eq!(n(syn::parse_quote!("1.0")), None);
    }

    #[test]
    fn mentions_finds_identifiers_in_nested_groups_and_macros() {
        let id: Ident = syn::parse_quote!(id);
        assert!(mentions(quote!(id), &id));
        assert!(mentions(quote!(id + 1), &id));
        assert!(mentions(quote!((a, [b, { id }])), &id));
        assert!(mentions(quote!(format!("{}", id)), &id));
        assert!(!mentions(quote!(ids + idx), &id));
        // an inline format argument of a macro call names it too
        assert!(mentions(quote!(format!("{id}")), &id));
        assert!(mentions(quote!(format!("a {id:?} b")), &id));
        assert!(!mentions(quote!(format!("{{id}}")), &id));
        assert!(!mentions(quote!(format!("{ids}")), &id));
        // a string that is not a macro argument does not
        assert!(!mentions(quote!(f("{id}")), &id));
        assert!(!mentions(quote!(), &id));
    }

    #[test]
    fn full_argument_set_parses() {
        let a = parse(quote!(
            ttl = "30s",
            strategy = "swr",
            stale = "10m",
            capacity = 5,
            skip(db),
            shared,
            lock_ttl = "3s",
            name = "users",
            fail_safe = "10m",
            soft_timeout = "200ms",
            load_timeout = "5s",
            returns = "result",
            crate = ::x::y
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(a.ttl, Duration::from_secs(30));
        assert_eq!(a.strategy, StrategyKind::Swr);
        assert_eq!(a.stale, Some(Duration::from_secs(600)));
        assert_eq!(a.capacity, Some(5));
        assert_eq!(a.skip.len(), 1);
        assert!(a.shared);
        assert_eq!(a.lock_ttl, Some(Duration::from_secs(3)));
        assert_eq!(a.name.map(|n| n.value()).as_deref(), Some("users"));
        assert_eq!(a.fail_safe, Some(Duration::from_secs(600)));
        assert_eq!(a.soft_timeout, Some(Duration::from_millis(200)));
        assert_eq!(a.load_timeout.map(|(d, _)| d), Some(Duration::from_secs(5)));
        assert_eq!(a.returns.map(|(r, _)| r), Some(Returns::Result));
        assert!(a.krate.is_some());
    }

    #[test]
    fn every_error_is_reported_not_just_the_first() {
        let e = errors(quote!(
            ttl = "0s",
            strategy = "swr",
            beta = 2.0,
            tll = "1s",
            capacity = 0,
            lock_ttl = "1s"
        ));
        assert_eq!(e.len(), 5, "{e:#?}");
        assert!(e[0].starts_with("`ttl` must be greater than zero"));
        assert!(e[1].starts_with("unknown argument `tll`"));
        assert!(e[2].starts_with("`capacity` must be greater than zero"));
        assert!(e[3].starts_with("`beta` only applies to `strategy = \"xfetch\"`"));
        assert!(e[4].starts_with("`lock_ttl` only applies to `shared` caches"));
    }

    #[test]
    fn missing_ttl_is_reported_only_when_ttl_was_not_given() {
        let e = errors(quote!(strategy = "swr"));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("#[stampede_cached] needs a `ttl`"));
        let e = errors(quote!(ttl = "soon"));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("`ttl`: cannot parse \"soon\""));
    }

    #[test]
    fn a_misspelt_argument_counts_as_given() {
        let e = errors(quote!(tll = "1s"));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("unknown argument `tll`"));
        let e = errors(quote!(ttl = "1s", stategy = "swr", stale = "1m"));
        assert_eq!(e.len(), 1, "{e:#?}");
        // nothing close: the missing ttl is reported too
        let e = errors(quote!(frobnicate = "1s"));
        assert_eq!(e.len(), 2, "{e:#?}");
        assert!(e[1].starts_with("#[stampede_cached] needs a `ttl`"));
    }

    #[test]
    fn rules_on_an_invalid_strategy_are_not_guessed() {
        // only the unknown strategy: `stale` may well be right once the strategy is fixed
        let e = errors(quote!(ttl = "1s", strategy = "swrr", stale = "1m"));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("unknown strategy \"swrr\""));
    }

    #[test]
    fn soft_timeout_needs_fail_safe_or_swr() {
        let e = errors(quote!(ttl = "1s", soft_timeout = "200ms"));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("`soft_timeout` needs a value to serve"),
            "{e:?}"
        );
        assert!(e[0].contains("fail_safe = \"10m\""));
        assert!(e[0].contains("strategy = \"swr\""));
        assert!(parse(quote!(ttl = "1s", soft_timeout = "200ms", fail_safe = "1m")).is_ok());
        assert!(parse(quote!(ttl = "1s", soft_timeout = "200ms", strategy = "swr")).is_ok());
        let e = errors(quote!(
            ttl = "1s",
            soft_timeout = "200ms",
            strategy = "xfetch"
        ));
        assert!(e[0].starts_with("`soft_timeout` needs a value to serve"));
    }

    #[test]
    fn new_durations_must_not_be_zero() {
        for arg in ["fail_safe", "soft_timeout", "load_timeout"] {
            let name = Ident::new(arg, Span::call_site());
            let e = errors(quote!(ttl = "1s", strategy = "swr", #name = "0ms"));
            assert_eq!(e.len(), 1, "{e:#?}");
            assert!(
                e[0].starts_with(&format!("`{arg}` must be greater than zero")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn key_and_skip_of_the_same_argument() {
        let e = errors(quote!(ttl = "1s", key: u64 = id + 1, skip(id, other)));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("`id` is skipped but the `key` expression uses it"));
    }

    #[test]
    fn skip_names_each_argument_once() {
        let e = errors(quote!(ttl = "1s", skip(a, b, a), capacity = 0));
        assert_eq!(e.len(), 2, "{e:#?}");
        assert_eq!(e[0], "`a` is named twice in `skip`");
    }

    #[test]
    fn duplicate_arguments() {
        let e = errors(quote!(ttl = "1s", ttl = "2s"));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("duplicate argument `ttl`"));
        assert!(e[0].contains("load_timeout"));
    }

    #[test]
    fn type_annotations_only_on_key() {
        let e = errors(quote!(ttl: u64 = "1s"));
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].starts_with("only `key` takes a type annotation, not `ttl`"));
    }
}
