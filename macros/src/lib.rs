//! The `#[stampede_cached]` attribute. Use it through the `stampede-cache` crate,
//! which re-exports it: `use stampede_cache::stampede_cached;`.

use proc_macro::TokenStream;

mod args;
mod expand;

/// Memoises an async function with stampede protection. See the `stampede-cache` crate docs.
#[proc_macro_attribute]
pub fn stampede_cached(args: TokenStream, item: TokenStream) -> TokenStream {
    match expand::expand(args.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}
