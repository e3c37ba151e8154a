//! trybuild cases live in `fail/` and `pass/`; the driver is `tests/ui.rs`.
