//! The pipeline: arguments → shape checks → key plan → emission.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::ItemFn;

use crate::args::Args;
use crate::diag::Errors;
use crate::emit::Expansion;
use crate::key_plan::{KeyPlan, inputs};
use crate::shape::{Output, check_signature, parse_fn};

pub fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = Args::parse(attr);
    let func = parse_fn(item)?;
    let checked = match args {
        Ok(args) => check(args, &func),
        Err(mut e) => {
            // Also report what is wrong with the function itself.
            if let Err(more) = check_signature(&func) {
                e.combine(more);
            }
            Err(e)
        }
    };
    Ok(match checked {
        Ok(expansion) => expansion.emit(),
        Err(e) => {
            // Keep the original fn, so that its callers do not add errors of their own.
            let mut out = e.to_compile_error();
            out.extend(func.to_token_stream());
            out
        }
    })
}

/// Every check that needs both the arguments and the function, all errors reported.
fn check(args: Args, func: &ItemFn) -> syn::Result<Expansion> {
    let mut errors = Errors::default();
    errors.check(check_signature(func));
    let krate = args
        .krate
        .as_ref()
        .map_or_else(|| quote!(::stampede_cache), |p| p.to_token_stream());
    let (receiver, inputs) = inputs(&func.sig);
    let plan = errors.check(KeyPlan::new(&args, &func.sig.ident, &inputs, &krate));
    let output = errors.check(Output::new(&args, &func.sig, &krate));
    errors.finish()?;
    Ok(Expansion {
        args,
        func: func.clone(),
        krate,
        receiver,
        output: output.expect("no error"),
        plan: plan.expect("no error"),
    })
}
