//! Parsing and validation of the attribute arguments (DESIGN §1).

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, LitStr, Path, Token, Type, UnOp};

/// Every argument name, in the order the error messages list them.
pub const VALID: &[&str] = &[
    "ttl", "strategy", "stale", "beta", "capacity", "key", "skip", "shared", "lock_ttl", "name",
    "returns", "crate",
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
    pub span: Span,
    pub ty: Option<Type>,
    pub expr: Expr,
}

/// Validated arguments, each with the span of the token that set it.
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
    pub returns: Option<(Returns, Span)>,
    pub krate: Option<Path>,
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

/// Edit distance with adjacent transpositions (optimal string alignment), for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// "did you mean `x`? " when a candidate is close, else "".
pub fn suggest<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    candidates
        .into_iter()
        .map(|c| (distance(got, c), c))
        .filter(|(d, c)| *d <= 2.min(c.len() / 2).max(1))
        .min()
        .map(|(_, c)| format!("did you mean `{c}`? "))
        .unwrap_or_default()
}

fn err(span: Span, msg: impl std::fmt::Display) -> syn::Error {
    syn::Error::new(span, msg)
}

fn expect_str(arg: &RawArg, example: &str) -> syn::Result<LitStr> {
    match &arg.value {
        RawValue::Expr(Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        })) => Ok(s.clone()),
        RawValue::Expr(e) => Err(syn::Error::new_spanned(
            e,
            format!(
                "`{}` takes a string literal\nhelp: write `{} = {example}`",
                arg.name, arg.name
            ),
        )),
        _ => Err(err(
            arg.name.span(),
            format!(
                "`{}` needs a value\nhelp: write `{} = {example}`",
                arg.name, arg.name
            ),
        )),
    }
}

fn parse_duration(arg: &RawArg, example: &str) -> syn::Result<(Duration, Span)> {
    let lit = expect_str(arg, example)?;
    let text = lit.value();
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        err(
            lit.span(),
            format!(
                "`{}`: cannot parse {:?} as a duration ({e})\nhelp: use humantime syntax such as \"250ms\", \"30s\", \"5m\", \"1h\" or \"1m 30s\"",
                arg.name, text
            ),
        )
    })?;
    if d.as_nanos() > u128::from(u64::MAX) {
        return Err(err(
            lit.span(),
            format!(
                "`{}`: {:?} is too long (the limit is about 584 years)",
                arg.name, text
            ),
        ));
    }
    Ok((d, lit.span()))
}

fn no_type(arg: &RawArg) -> syn::Result<()> {
    match &arg.ty {
        Some(ty) => Err(syn::Error::new_spanned(
            ty,
            format!(
                "only `key` takes a type annotation, not `{}`\nhelp: write `{} = ...`",
                arg.name, arg.name
            ),
        )),
        None => Ok(()),
    }
}

fn flag(arg: &RawArg) -> syn::Result<()> {
    match &arg.value {
        RawValue::None => Ok(()),
        RawValue::Expr(e) => Err(syn::Error::new_spanned(
            e,
            format!(
                "`{}` is a flag and takes no value\nhelp: write just `{}`",
                arg.name, arg.name
            ),
        )),
        RawValue::List(span, _) => Err(err(
            *span,
            format!(
                "`{}` is a flag and takes no value\nhelp: write just `{}`",
                arg.name, arg.name
            ),
        )),
    }
}

/// The numeric value of a literal (optionally negated) expression.
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

impl Args {
    /// Parses and validates the attribute's arguments.
    pub fn parse(tokens: TokenStream) -> syn::Result<Args> {
        let raw: Punctuated<RawArg, Token![,]> =
            syn::parse::Parser::parse2(Punctuated::parse_terminated, tokens)?;

        let mut seen: Vec<Ident> = Vec::new();
        let mut ttl = None;
        let mut strategy = None;
        let mut stale = None;
        let mut beta = None;
        let mut capacity = None;
        let mut key = None;
        let mut skip: Option<(Span, Vec<Ident>)> = None;
        let mut shared = None;
        let mut lock_ttl = None;
        let mut name = None;
        let mut returns = None;
        let mut krate = None;

        for arg in &raw {
            let n = arg.name.to_string();
            if !VALID.contains(&n.as_str()) {
                return Err(err(
                    arg.name.span(),
                    format!(
                        "unknown argument `{n}` of #[stampede_cached]\nhelp: {}valid arguments: {}",
                        suggest(&n, VALID.iter().copied()),
                        VALID.join(", ")
                    ),
                ));
            }
            if seen.contains(&arg.name) {
                return Err(err(
                    arg.name.span(),
                    format!(
                        "duplicate argument `{n}`\nhelp: give `{n}` once; valid arguments: {}",
                        VALID.join(", ")
                    ),
                ));
            }
            seen.push(arg.name.clone());
            if n != "key" {
                no_type(arg)?;
            }
            match n.as_str() {
                "ttl" => {
                    let (d, span) = parse_duration(arg, "\"30s\"")?;
                    if d.is_zero() {
                        return Err(err(
                            span,
                            "`ttl` must be greater than zero\nhelp: a value that is never fresh is never served; use e.g. `ttl = \"1s\"`",
                        ));
                    }
                    ttl = Some(d);
                }
                "stale" => stale = Some(parse_duration(arg, "\"10m\"")?),
                "lock_ttl" => {
                    let (d, span) = parse_duration(arg, "\"10s\"")?;
                    if d.is_zero() {
                        return Err(err(
                            span,
                            "`lock_ttl` must be greater than zero\nhelp: it is the lease of the fleet-wide lock, e.g. `lock_ttl = \"10s\"`",
                        ));
                    }
                    lock_ttl = Some((d, arg.name.span()));
                }
                "strategy" => {
                    let lit = expect_str(arg, "\"swr\"")?;
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
                    strategy = Some((kind, lit.span()));
                }
                "beta" => {
                    let RawValue::Expr(e) = &arg.value else {
                        return Err(err(
                            arg.name.span(),
                            "`beta` needs a value\nhelp: write `beta = 1.0`",
                        ));
                    };
                    match number(e) {
                        Some((v, _)) if v > 0.0 && v.is_finite() => {
                            beta = Some((v, arg.name.span()))
                        }
                        Some(_) => {
                            return Err(syn::Error::new_spanned(
                                e,
                                "`beta` must be a positive, finite number\nhelp: 1.0 is the XFetch default; larger refreshes earlier, e.g. `beta = 2.0`",
                            ));
                        }
                        None => {
                            return Err(syn::Error::new_spanned(
                                e,
                                "`beta` takes a float literal\nhelp: write e.g. `beta = 1.0`",
                            ));
                        }
                    }
                }
                "capacity" => {
                    let RawValue::Expr(e) = &arg.value else {
                        return Err(err(
                            arg.name.span(),
                            "`capacity` needs a value\nhelp: write e.g. `capacity = 10_000`",
                        ));
                    };
                    let v = match e {
                        Expr::Lit(ExprLit {
                            lit: Lit::Int(i), ..
                        }) => i.base10_parse::<u64>().map_err(|_| {
                            syn::Error::new_spanned(e, "`capacity` does not fit in 64 bits")
                        })?,
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
                    capacity = Some(v);
                }
                "key" => {
                    let RawValue::Expr(e) = &arg.value else {
                        return Err(err(
                            arg.name.span(),
                            "`key` needs an expression\nhelp: write `key = id` or `key: String = format!(\"{id}:{region}\")`",
                        ));
                    };
                    key = Some(KeyArg {
                        span: arg.name.span(),
                        ty: arg.ty.clone(),
                        expr: e.clone(),
                    });
                }
                "skip" => {
                    let RawValue::List(span, list) = &arg.value else {
                        return Err(err(
                            arg.name.span(),
                            "`skip` takes a list of argument names\nhelp: write e.g. `skip(db, trace_id)`",
                        ));
                    };
                    let names = syn::parse::Parser::parse2(
                        Punctuated::<Ident, Token![,]>::parse_terminated,
                        list.clone(),
                    )
                    .map_err(|e| {
                        err(
                            e.span(),
                            "`skip` takes a list of argument names\nhelp: write e.g. `skip(db, trace_id)`",
                        )
                    })?;
                    if names.is_empty() {
                        return Err(err(
                            *span,
                            "`skip()` names no argument\nhelp: list arguments to leave out of the key, e.g. `skip(db)`, or remove it",
                        ));
                    }
                    let mut v: Vec<Ident> = Vec::new();
                    for id in names {
                        if v.contains(&id) {
                            return Err(err(id.span(), format!("`{id}` is named twice in `skip`")));
                        }
                        v.push(id);
                    }
                    skip = Some((*span, v));
                }
                "shared" => {
                    flag(arg)?;
                    shared = Some(arg.name.span());
                }
                "name" => {
                    let lit = expect_str(arg, "\"users.by_id\"")?;
                    if lit.value().trim().is_empty() {
                        return Err(err(
                            lit.span(),
                            "`name` must not be empty\nhelp: use a stable name such as \"users.by_id\", or omit it for `module_path!()::fn_name`",
                        ));
                    }
                    name = Some(lit);
                }
                "returns" => {
                    let lit = expect_str(arg, "\"result\"")?;
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
                    returns = Some((r, lit.span()));
                }
                "crate" => {
                    let path = match &arg.value {
                        RawValue::Expr(Expr::Path(p)) if p.qself.is_none() => p.path.clone(),
                        RawValue::Expr(Expr::Lit(ExprLit {
                            lit: Lit::Str(s), ..
                        })) => s.parse::<Path>().map_err(|_| {
                            err(s.span(), "`crate` takes a path\nhelp: write e.g. `crate = ::my_crate::stampede_cache`")
                        })?,
                        RawValue::Expr(e) => {
                            return Err(syn::Error::new_spanned(
                                e,
                                "`crate` takes a path\nhelp: write e.g. `crate = ::my_crate::stampede_cache`",
                            ));
                        }
                        _ => {
                            return Err(err(
                                arg.name.span(),
                                "`crate` needs a path\nhelp: write e.g. `crate = ::my_crate::stampede_cache`",
                            ));
                        }
                    };
                    krate = Some(path);
                }
                _ => {}
            }
            if !matches!(n.as_str(), "shared" | "skip" | "key")
                && let RawValue::List(span, _) = &arg.value
            {
                return Err(err(*span, format!("`{n}` takes `= value`, not a list")));
            }
        }

        let Some(ttl) = ttl else {
            return Err(err(
                Span::call_site(),
                "#[stampede_cached] needs a `ttl`\nhelp: add how long a value stays fresh, e.g. `#[stampede_cached(ttl = \"30s\")]`",
            ));
        };
        let strategy_kind = strategy.map_or(StrategyKind::Lock, |(k, _)| k);
        let strategy_note = |want: &str| match strategy {
            Some((_, _)) => {
                format!("help: it needs `strategy = \"{want}\"`; remove it or change the strategy")
            }
            None => format!("help: add `strategy = \"{want}\"` (the default strategy is \"lock\")"),
        };
        if let Some((_, span)) = stale
            && strategy_kind != StrategyKind::Swr
        {
            return Err(err(
                span,
                format!(
                    "`stale` only applies to `strategy = \"swr\"`\n{}",
                    strategy_note("swr")
                ),
            ));
        }
        if let Some((_, span)) = beta
            && strategy_kind != StrategyKind::XFetch
        {
            return Err(err(
                span,
                format!(
                    "`beta` only applies to `strategy = \"xfetch\"`\n{}",
                    strategy_note("xfetch")
                ),
            ));
        }
        if let Some((_, span)) = lock_ttl
            && shared.is_none()
        {
            return Err(err(
                span,
                "`lock_ttl` only applies to `shared` caches\nhelp: add `shared`, or remove `lock_ttl`",
            ));
        }

        Ok(Args {
            ttl,
            strategy: strategy_kind,
            stale: stale.map(|(d, _)| d),
            beta: beta.map(|(b, _)| b),
            capacity,
            key,
            skip: skip.map(|(_, v)| v).unwrap_or_default(),
            shared: shared.is_some(),
            lock_ttl: lock_ttl.map(|(d, _)| d),
            name,
            returns,
            krate,
        })
    }
}
