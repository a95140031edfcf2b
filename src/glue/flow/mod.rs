//! One OpenID Connect exchange per file, driven by a handler and built on the services: the
//! login (authorization request), the callback (authorization response, code exchange, ID
//! token), the refresh grant, bearer tokens, and logout.

pub mod bearer;
pub mod callback;
pub mod login;
pub mod logout;
pub mod refresh;
