//! # domi-admin
//!
//! Will own the admin HTTP server (tiny_http): `/stop`, `/pause`, `/resume`,
//! `/status`, `/metrics`, `/health`, talking to the node only through a small
//! control trait. Not built yet: see the lifecycle issue.
