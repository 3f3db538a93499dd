//! What agentd and its worker processes agree on, owned by neither side: the child's environment,
//! the `${env:…}` placeholder grammar, the notify messages, the layout of the property document
//! and its nesting limit, and the addons of the built-in worker with the properties they read.
//!
//! The supervisor writes these things and the worker (or any other child) reads them; keeping
//! both readings in one place is what makes them agree. It depends on nothing else in agentd.

pub mod addons;
pub mod document;
pub mod env;
pub mod notify;
pub mod placeholder;
pub mod prewarm;
