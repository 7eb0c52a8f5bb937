//! Bad input and attacks at every boundary, one module per boundary: the store (text that
//! no database can take), fencing (reports that do not answer the current lease), the cluster
//! (frames that claim another node, hoarded credits, silent handshakes) and the HTTP API
//! (cross-site requests, missing tokens, scopes, limits). Each test here failed on the code
//! before its fix.

#[allow(unused_imports)]
#[path = "support/common.rs"]
mod common;
#[allow(unused_imports)]
#[macro_use]
#[path = "support/databases.rs"]
mod databases;

#[path = "security/cluster.rs"]
mod cluster;
#[path = "security/fencing.rs"]
mod fencing;
#[path = "security/http.rs"]
mod http;
#[path = "security/store.rs"]
mod store;
