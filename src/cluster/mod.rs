//! The cluster's shared state and its domain operations, below every subsystem: the context a
//! running server shares with the API server, supervisor, controllers and D-Bus service; the
//! credentials and node-password records; bootstrap and server tokens; the node and token
//! operations of the admin interface. `server/` only wires these to the subsystems
//! (docs/architecture.md, "Who may depend on whom").

pub mod admin;
pub mod apiservers;
pub mod bootstrap_tokens;
pub mod context;
pub mod credentials;
pub mod encryption_follow;
pub mod encryption_stages;
pub mod node_password;
pub mod token_ops;
