//! The pipeline: arguments → shape checks → key plan → emission.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};

use crate::args::Args;
use crate::batch::{self, Batch};
use crate::diag::Errors;
use crate::emit::{Expansion, in_trait_impl};
use crate::key_plan::{KeyPlan, inputs};
use crate::shape::{Func, Output, check_signature, parse_fn};

/// The expansion of `#[stampede_cached(<attr>)] <item>`. Every error is reported at once;
/// with errors, the item is kept as written, and when only the arguments are wrong (the
/// signature is one the macro accepts, and the key and value types can be named) its
/// `<fn>_cache()` handle is still declared, so that its callers add no errors of their own.
pub fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let (args, mut errors) = Args::parse_lenient(attr);
    let func = match parse_fn(item) {
        Ok(func) => func,
        Err(e) => {
            errors.push(e);
            return errors.finish().expect_err("an error").to_compile_error();
        }
    };
    let shape_ok = errors.check(check_signature(&func)).is_some();
    let Some(args) = args else {
        let mut out = errors.finish().expect_err("an error").to_compile_error();
        out.extend(func.original());
        return out;
    };
    let krate = args
        .krate
        .as_ref()
        .map_or_else(|| quote!(::stampede_cache), |p| p.to_token_stream());
    let (receiver, plan, output, batch) = plan(&args, &func, &krate, &mut errors);
    let failed = errors.finish().err();
    let (Some(plan), Some(output)) = (plan, output) else {
        let mut out = failed.expect("an error").to_compile_error();
        out.extend(func.original());
        return out;
    };
    let in_trait = in_trait_impl(&args, &func);
    let expansion = Expansion {
        args,
        func,
        krate,
        receiver,
        output,
        plan,
        batch,
    };
    match failed {
        None => expansion.emit(),
        Some(e) => {
            // The fn as written, and its handle: the errors are the arguments' alone.
            let mut out = e.to_compile_error();
            out.extend(expansion.func.original());
            if shape_ok && !in_trait {
                out.extend(expansion.handle());
            }
            out
        }
    }
}

/// The receiver, the key plan and the output of `func` (and its `batch` form), each `None`
/// when its checks failed (the errors are in `errors`).
fn plan(
    args: &Args,
    func: &Func,
    krate: &TokenStream,
    errors: &mut Errors,
) -> (
    Option<proc_macro2::Span>,
    Option<KeyPlan>,
    Option<Output>,
    Option<Batch>,
) {
    let (receiver, inputs) = inputs(&func.sig);
    let args_span = func.sig.paren_token.span.join();
    if args.batch.is_some() {
        let Some(mut output) = errors.check(Output::new(args, &func.sig, krate)) else {
            return (receiver, None, None, None);
        };
        let planned = errors.check(batch::plan(
            args,
            receiver,
            &inputs,
            args_span,
            &mut output,
            krate,
        ));
        let (plan, batch) = planned.unzip();
        return (receiver, plan, Some(output), batch);
    }
    let plan = errors.check(KeyPlan::new(
        args,
        &func.sig.ident,
        receiver,
        &inputs,
        args_span,
        krate,
    ));
    let output = errors.check(Output::new(args, &func.sig, krate));
    (receiver, plan, output, None)
}
