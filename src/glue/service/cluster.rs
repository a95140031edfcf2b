//! The cluster store's link to Redis: per worker and provider with `cluster_store`, one task on
//! nginx's event loop (`ngx::async_`) holding a subscriber connection and a command connection,
//! both nginx peer connections read and written without ever blocking the worker — the model
//! of nginx-acme's `src/net/peer_conn.rs`, over plain TCP or, for `rediss://`, over nginx's
//! SSL layer (see [`super::cluster_tls`]).
//!
//! Requests never talk to Redis: a sign-out or back-channel logout records the revocation in
//! the zone, marked as owed to the store, and pokes the task, which delivers it (SET with an
//! expiry + PUBLISH). What other nodes publish is mirrored into the zone. After every
//! (re)connection the task first loads every revocation in the store (SCAN + MGET). A request
//! whose session needs a refresh leaves its question (may this node refresh?) in a per-worker
//! table and looks for the answer on a timer; the task asks Redis and writes the answer there
//! (see `crate::cluster::refresh`).

use core::ffi::c_void;
use core::future::{poll_fn, Future};
use core::mem;
use core::pin::pin;
use core::ptr;
use core::task::{Context, Poll, Waker};
use core::time::Duration;
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::slice;

use ngx::async_::resolver::Resolver;
use ngx::ffi::{
    ngx_add_timer, ngx_close_connection, ngx_conf_t, ngx_connection_t, ngx_create_pool,
    ngx_cycle_t, ngx_del_timer, ngx_destroy_pool, ngx_event_connect_peer, ngx_event_get_peer,
    ngx_event_t, ngx_exiting, ngx_handle_read_event, ngx_handle_write_event, ngx_int_t, ngx_log_t,
    ngx_msec_t, ngx_peer_connection_t, ngx_pool_t, ngx_ssl_handshake, ngx_str_t, ngx_terminate,
    ngx_uint_t, NGX_AGAIN, NGX_ERROR, NGX_LOG_ALERT, NGX_LOG_EMERG, NGX_LOG_INFO, NGX_LOG_NOTICE,
    NGX_LOG_WARN, NGX_OK,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_log_error;

use super::cluster_tls::{self, Context as TlsContext};
use super::time::now;
use super::zone;
use crate::cluster::link::{self as cluster_link, Backoff, Event, Outage};
use crate::cluster::names::Names;
use crate::cluster::refresh::{self as cluster_refresh, Claim, Report, RESULT_TTL_SECS};
use crate::cluster::revocation;
use crate::cluster::wire::{self, Reply};
use crate::conf::cluster::{self, ClusterStore};
use crate::glue::{Module, Provider};
use crate::shared::Key;

/// Longest wait for a TCP connection to Redis, and then for its TLS handshake.
const CONNECT_TIMEOUT: ngx_msec_t = 3000;
/// The pool of a TLS connection: nginx's SSL connection state is allocated from it.
const TLS_POOL_SIZE: usize = 1024;
/// Longest wait for a reply to a command: a Redis slower than this counts as down.
const REPLY_TIMEOUT: ngx_msec_t = 3000;
/// How often an idle link is checked with PING, so that a vanished Redis (no FIN, no RST) is
/// noticed and revocations made meanwhile are queued, not lost in a dead socket.
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// Revocations delivered per round trip (pipelined).
const BATCH: usize = 256;
/// Longest wait for nginx's resolver when the http block's `resolver_timeout` is not set
/// (nginx's own default).
const RESOLVER_TIMEOUT: ngx_msec_t = 30_000;
/// Keys asked for per SCAN step.
const SCAN_COUNT: &[u8] = b"1000";

thread_local! {
    /// Tasks of this worker waiting for work, and how many pokes there were: a request that
    /// revoked a session wakes them without touching Redis itself.
    static POKES: Cell<u64> = const { Cell::new(0) };
    static WAITING: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
    /// Requests' questions to Redis about refreshes, and the answers they have not picked up.
    static ASKS: RefCell<Vec<Ask>> = const { RefCell::new(Vec::new()) };
    /// What requests that refreshed tell Redis, waiting for the link.
    static REPORTS: RefCell<Vec<(usize, Key, Report)>> = const { RefCell::new(Vec::new()) };
    /// Refresh locks this worker holds in Redis.
    static HELD: RefCell<Vec<Held>> = const { RefCell::new(Vec::new()) };
    /// Providers whose link is up (connected and loaded) in this worker.
    static UP: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    /// Every open connection of this worker's links, closed by [`exit_process`] whatever its
    /// task awaits at that moment.
    static OPEN: RefCell<Vec<*mut Inner>> = const { RefCell::new(Vec::new()) };
}

/// A refresh lock this worker holds in Redis.
struct Held {
    provider: usize,
    key: Key,
    /// The lock's value: only its holder releases it.
    value: Vec<u8>,
    /// When it was taken (Unix seconds).
    at: u64,
}

/// A request's question whether this node may refresh a session.
struct Ask {
    provider: usize,
    key: Key,
    asked: u64,
    state: AskState,
}

enum AskState {
    Queued,
    Sent,
    Answered(Claim),
}

/// Identifies a provider in the per-worker tables (its address is fixed for the cycle).
fn id(p: &Provider) -> usize {
    p as *const Provider as usize
}

fn poke() {
    POKES.with(|n| n.set(n.get().wrapping_add(1)));
    for w in WAITING.with(|w| mem::take(&mut *w.borrow_mut())) {
        w.wake();
    }
}

/// Whether this node may refresh the session whose refresh token digests to `key`, as far as
/// the other nodes are concerned; `None` until Redis answered (ask again after a pause). A
/// provider without a cluster store, or whose link is down, gets `Unavailable` at once:
/// node-local coordination only.
pub fn claim_refresh(p: &Provider, key: &Key, now: u64) -> Option<Claim> {
    if !link_up(p) {
        return Some(Claim::Unavailable);
    }
    let pid = id(p);
    let (answer, queued) = ASKS.with(|asks| {
        let mut asks = asks.borrow_mut();
        // Answers nobody came back for (the client went away) are dropped after a while, and
        // so are locks whose refresh never reported (Redis lets them expire).
        asks.retain(|a| a.asked + RESULT_TTL_SECS > now);
        HELD.with(|h| h.borrow_mut().retain(|l| l.at + RESULT_TTL_SECS > now));
        match asks.iter().position(|a| a.provider == pid && a.key == *key) {
            Some(i) if matches!(asks[i].state, AskState::Answered(_)) => {
                match asks.remove(i).state {
                    AskState::Answered(claim) => (Some(claim), false),
                    _ => (None, false),
                }
            }
            Some(_) => (None, false),
            None => {
                asks.push(Ask {
                    provider: pid,
                    key: *key,
                    asked: now,
                    state: AskState::Queued,
                });
                (None, true)
            }
        }
    });
    if queued {
        poke();
    }
    answer
}

/// Whether this worker may count on the cluster store for `p`: true without `cluster_store`,
/// else only while its link to Redis is connected and has loaded the revocations
/// (`/oauth2/ready`, issue #16).
pub fn link_up(p: &Provider) -> bool {
    p.conf.cluster.is_none() || UP.with(|u| u.borrow().contains(&id(p)))
}

/// Tells the other nodes how this node's refresh of `key` ended (see [`Report`]).
pub fn report_refresh(p: &Provider, key: &Key, report: Report) {
    // With the link down nothing is owed: the lock, if any, expires in Redis.
    if !link_up(p) {
        return;
    }
    REPORTS.with(|r| r.borrow_mut().push((id(p), *key, report)));
    poke();
}

/// Records a revocation in this node's zone and, with a cluster store, hands it to this
/// worker's link for delivery to every other node. `until` and `since` are Unix seconds (see
/// [`crate::shared::ALL_LOGINS`]).
///
/// # Safety
/// Must run in a worker (the zone exists).
pub unsafe fn revoke(p: &Provider, key: &Key, until: u64, since: u64, now: u64) {
    let cluster = p.conf.cluster.is_some();
    // SAFETY: per this function's contract.
    unsafe {
        zone::with_table(p.zone, |t| {
            if cluster {
                t.revoke_for_cluster(key, until, since, now)
            } else {
                t.revoke_logins(key, until, since, now)
            }
        })
    };
    if cluster {
        poke();
    }
}

/// `init_process`: starts the link of every provider with a cluster store in this worker.
///
/// # Safety
/// nginx calls it with the worker's cycle.
pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx passes the live cycle of this worker.
    let cycle = unsafe { &mut *cycle };
    let Some(main) = Module::main_conf(cycle) else {
        return NGX_OK as ngx_int_t;
    };
    // SAFETY: the cycle pool lives as long as this worker's configuration.
    let pool = unsafe { ngx::core::Pool::from_ngx_pool(cycle.pool) };
    for p in &main.providers {
        let Some(store) = &p.conf.cluster else {
            continue;
        };
        let task = ngx::async_::spawn(run(p, store));
        // The task is dropped with the cycle, before the configuration it borrows.
        if pool.allocate(task).is_null() {
            return NGX_ERROR as ngx_int_t;
        }
    }
    NGX_OK as ngx_int_t
}

fn exiting() -> bool {
    // SAFETY: plain flags nginx sets from its signal handling, read on the worker's thread.
    unsafe { ngx_exiting != 0 || ngx_terminate != 0 }
}

fn log() -> *mut ngx_log_t {
    ngx::log::ngx_cycle_log().as_ptr()
}

/// Why the link went down; the text goes to the error log and never holds a secret.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Wire(#[from] wire::Malformed),
    #[error("Redis answered \"{0}\"")]
    Refused(String),
    /// nginx's resolver found no address for the store's host.
    #[error("{0}")]
    Resolve(String),
    #[error("Redis answered something unexpected")]
    Unexpected,
    /// The worker is shutting down.
    #[error("exiting")]
    Exiting,
}

async fn run(p: &'static Provider, store: &'static ClusterStore) {
    let names = Names::new(&store.prefix);
    let mut backoff = Backoff::default();
    let mut outage = Outage::default();
    let mut next_addr = 0;
    loop {
        let (peer, result) = match addresses(p, store).await {
            Ok(addrs) => {
                let addr = addrs[next_addr % addrs.len()];
                let result = link(p, store, &names, addr, &mut outage, &mut backoff).await;
                (addr.to_string(), result)
            }
            Err(e) => (format!("{}:{}", store.url.host, store.url.port), Err(e)),
        };
        link_down(p);
        let e = match result {
            Err(LinkError::Exiting) | Ok(()) => return,
            Err(e) => e,
        };
        if exiting() {
            return;
        }
        if outage.failed() == Some(Event::Lost) {
            // Redis that answers with an error (a wrong password, a missing ACL permission) is
            // reachable: say it refused, so that nobody looks for a network fault.
            let what = match e {
                LinkError::Refused(_) => "refused this node",
                _ => "unreachable",
            };
            ngx_log_error!(
                NGX_LOG_WARN,
                log(),
                "oidc: provider \"{}\": cluster store {} {}: {}; requests are decided by this \
                 node alone, revocations are queued until it is back",
                p.conf.name,
                peer,
                what,
                e
            );
        }
        next_addr += 1;
        ngx::async_::sleep(backoff.next_delay()).await;
    }
}

/// Where the store is now: the addresses known from the configuration, or what nginx's
/// `resolver` answers for the host at this moment (so that a Redis whose address changes is
/// followed without a reload, as `proxy_pass $variable` does). Errors name the host.
async fn addresses(p: &Provider, store: &ClusterStore) -> Result<Vec<SocketAddr>, LinkError> {
    let Some(resolver) = &p.cluster_resolver else {
        return Ok(store.addrs.clone());
    };
    let host = &store.url.host;
    let name = ngx_str_t {
        len: host.len(),
        data: host.as_ptr().cast_mut(),
    };
    let pool = ScratchPool::new()?;
    let found = resolver
        .resolve_name(&name, &pool.0)
        .await
        .map_err(|e| LinkError::Resolve(e.to_string()))?;
    let addrs: Vec<SocketAddr> = found
        .iter()
        // SAFETY: the resolver's answers are socket addresses of the length it gives.
        .filter_map(|a| unsafe { read_sockaddr(a.sockaddr.cast(), a.socklen, store.url.port) })
        .collect();
    if addrs.is_empty() {
        return Err(LinkError::Resolve(format!("\"{host}\" has no address")));
    }
    Ok(addrs)
}

/// A pool for one lookup's answers, destroyed with them: a lookup per reconnect must not
/// grow the cycle's pool through a long outage.
struct ScratchPool(ngx::core::Pool);

impl ScratchPool {
    fn new() -> io::Result<ScratchPool> {
        // SAFETY: creates a pool owned by this value, logging to the cycle's log.
        let pool = unsafe { ngx_create_pool(1024, log()) };
        if pool.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        // SAFETY: a pool just created and not yet destroyed.
        Ok(ScratchPool(unsafe { ngx::core::Pool::from_ngx_pool(pool) }))
    }
}

impl Drop for ScratchPool {
    fn drop(&mut self) {
        // SAFETY: the pool is ours and nothing allocated in it outlives this value (the
        // lookup's answers are dropped first, having been declared after it).
        unsafe { ngx_destroy_pool(self.0.as_ptr()) };
    }
}

/// `postconfiguration`: decides for every `cluster_store` that names a host how it is looked
/// up. With a `resolver` in the http block, nginx's resolver at every connect; without one,
/// the system resolver now, once, like `proxy_pass` — and a host that does not resolve fails
/// `nginx -t`, naming the provider, the directive and both fixes.
///
/// # Safety
/// `cf` must be the http configuration being finished (postconfiguration).
pub unsafe fn configure(cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: per this function's contract.
    let cf = unsafe { &mut *cf };
    let Some(main) = Module::main_conf_mut(cf) else {
        return NGX_OK as ngx_int_t;
    };
    let resolver = NgxHttpCoreModule::location_conf(cf).and_then(|clcf| {
        // SAFETY: the http block's core location conf is merged by now; its resolver is
        // null, nginx's stand-in without addresses, or a configured one.
        let configured =
            !clcf.resolver.is_null() && unsafe { (*clcf.resolver).connections.nelts } > 0;
        // NGX_CONF_UNSET_MSEC, a C macro the bindings lack.
        let timeout = if clcf.resolver_timeout == ngx_msec_t::MAX {
            RESOLVER_TIMEOUT
        } else {
            clcf.resolver_timeout
        };
        configured.then(|| (ptr::NonNull::new(clcf.resolver), timeout))
    });
    for p in main.providers.iter_mut() {
        let Some(store) = p.conf.cluster.as_mut() else {
            continue;
        };
        if !store.addrs.is_empty() {
            continue;
        }
        if let Some((Some(r), timeout)) = resolver {
            p.cluster_resolver = Some(Resolver::from_resolver(r, timeout));
            continue;
        }
        match cluster::resolve(&store.url) {
            Ok(addrs) => store.addrs = addrs,
            Err(e) => {
                ngx::ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "oidc_provider \"{}\": cluster_store: {}; fix the host name, or add \
                     `resolver ADDRESS;` to the http block to look it up at every connect \
                     instead of once at start",
                    p.conf.name,
                    e
                );
                return NGX_ERROR as ngx_int_t;
            }
        }
    }
    NGX_OK as ngx_int_t
}

/// One life of the link: connect both connections, load, then mirror and deliver until an
/// error.
async fn link(
    p: &'static Provider,
    store: &ClusterStore,
    names: &Names,
    addr: SocketAddr,
    outage: &mut Outage,
    backoff: &mut Backoff,
) -> Result<(), LinkError> {
    let tls = p.cluster_tls.as_ref().map(|ctx| Tls {
        ctx,
        host: &store.url.host,
    });
    let mut sub = Conn::connect(addr, tls).await?;
    hello(&mut sub, store).await?;
    sub.send(&cmd(&[b"SUBSCRIBE", &names.channel()])).await?;
    // Subscribed before loading: nothing published meanwhile is missed.
    match sub.reply().await? {
        Reply::Array(a) if a.first().and_then(Reply::bytes) == Some(b"subscribe") => {}
        Reply::Error(e) => return Err(LinkError::Refused(e)),
        _ => return Err(LinkError::Unexpected),
    }
    let mut cmd_conn = Conn::connect(addr, tls).await?;
    hello(&mut cmd_conn, store).await?;
    let loaded = load(p, names, &mut cmd_conn).await?;
    UP.with(|u| u.borrow_mut().push(id(p)));
    backoff.reset();
    if outage.working() == Some(Event::Back) {
        ngx_log_error!(
            NGX_LOG_NOTICE,
            log(),
            "oidc: provider \"{}\": cluster store {} reachable again; {} revocations loaded",
            p.conf.name,
            addr,
            loaded
        );
    }
    let mut seen = POKES.with(Cell::get);
    loop {
        deliver(p, names, &mut cmd_conn).await?;
        coordinate(p, names, &mut cmd_conn).await?;
        let mut tick = pin!(ngx::async_::sleep(PING_INTERVAL));
        let woke = poll_fn(|cx| {
            if exiting() || sub.closing() || cmd_conn.closing() {
                return Poll::Ready(Err(LinkError::Exiting));
            }
            match sub.poll_fill(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(Wake::Message)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e.into())),
                Poll::Pending => {}
            }
            // A socket closed by nginx (shutdown) must wake this task too.
            cmd_conn.watch(cx);
            if POKES.with(Cell::get) != seen {
                return Poll::Ready(Ok(Wake::Poke));
            }
            WAITING.with(|w| {
                let mut w = w.borrow_mut();
                if !w.iter().any(|x| x.will_wake(cx.waker())) {
                    w.push(cx.waker().clone());
                }
            });
            if tick.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(Wake::Tick));
            }
            Poll::Pending
        })
        .await?;
        match woke {
            Wake::Message => {
                while let Some(reply) = wire::take_reply(&mut sub.buf)? {
                    mirror(p, &reply);
                }
            }
            Wake::Poke => seen = POKES.with(Cell::get),
            Wake::Tick => {
                cmd_conn.send(&cmd(&[b"PING"])).await?;
                expect_status(cmd_conn.reply().await?)?;
            }
        }
    }
}

enum Wake {
    Message,
    Poke,
    Tick,
}

fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    wire::command(&mut out, args);
    out
}

fn expect_status(r: Reply) -> Result<(), LinkError> {
    match r {
        Reply::Status(_) | Reply::Integer(_) => Ok(()),
        Reply::Error(e) => Err(LinkError::Refused(e)),
        _ => Err(LinkError::Unexpected),
    }
}

/// AUTH and SELECT as the URL asks.
async fn hello(c: &mut Conn, store: &ClusterStore) -> Result<(), LinkError> {
    let url = &store.url;
    if let Some(pw) = &url.password {
        let mut args: Vec<&[u8]> = vec![b"AUTH"];
        if let Some(user) = &url.username {
            args.push(user.as_bytes());
        }
        args.push(pw.as_bytes());
        let mut line = zeroize::Zeroizing::new(Vec::new());
        wire::command(&mut line, &args);
        c.send(&line).await?;
        expect_status(c.reply().await?)?;
    }
    if url.db != 0 {
        c.send(&cmd(&[b"SELECT", url.db.to_string().as_bytes()]))
            .await?;
        expect_status(c.reply().await?)?;
    }
    Ok(())
}

/// Copies every revocation in the store into the zone; returns how many there were.
async fn load(p: &Provider, names: &Names, c: &mut Conn) -> Result<usize, LinkError> {
    let mut cursor = b"0".to_vec();
    let mut total = 0;
    loop {
        c.send(&cmd(&[
            b"SCAN",
            &cursor,
            b"MATCH",
            &names.pattern(),
            b"COUNT",
            SCAN_COUNT,
        ]))
        .await?;
        let Reply::Array(mut parts) = c.reply().await? else {
            return Err(LinkError::Unexpected);
        };
        let (Some(Reply::Array(keys)), Some(next)) = (parts.pop(), parts.pop()) else {
            return Err(LinkError::Unexpected);
        };
        cursor = next.bytes().ok_or(LinkError::Unexpected)?.to_vec();
        let keys: Vec<Vec<u8>> = keys
            .into_iter()
            .filter_map(|k| k.bytes().map(<[u8]>::to_vec))
            .collect();
        if !keys.is_empty() {
            let mut args: Vec<&[u8]> = vec![b"MGET"];
            args.extend(keys.iter().map(Vec::as_slice));
            c.send(&cmd(&args)).await?;
            let Reply::Array(values) = c.reply().await? else {
                return Err(LinkError::Unexpected);
            };
            let now = now();
            for (k, v) in keys.iter().zip(values) {
                let key = names.parse_key(k);
                let times = v.bytes().and_then(revocation::parse_value);
                if let (Some(key), Some((until, since))) = (key, times) {
                    // SAFETY: the task runs in a worker, where the zone exists.
                    unsafe {
                        zone::with_table(p.zone, |t| t.revoke_logins(&key, until, since, now))
                    };
                    total += 1;
                }
            }
        }
        if cursor == b"0" {
            return Ok(total);
        }
    }
}

/// Sends the revocations this node owes the store, SET with an expiry and PUBLISH each,
/// pipelined; marks them delivered once Redis confirmed both.
async fn deliver(p: &Provider, names: &Names, c: &mut Conn) -> Result<(), LinkError> {
    loop {
        let now = now();
        // SAFETY: the task runs in a worker, where the zone exists.
        let owed = unsafe { zone::with_table(p.zone, |t| t.pending(now)) }.unwrap_or_default();
        if owed.is_empty() {
            return Ok(());
        }
        let batch = &owed[..owed.len().min(BATCH)];
        let mut out = Vec::new();
        let channel = names.channel();
        for (key, until, since) in batch {
            let ttl = revocation::expiry(*until, now).unwrap_or(1).to_string();
            wire::command(
                &mut out,
                &[
                    b"SET",
                    &names.key(key),
                    &revocation::value(*until, *since),
                    b"EX",
                    ttl.as_bytes(),
                ],
            );
            wire::command(
                &mut out,
                &[
                    b"PUBLISH",
                    &channel,
                    &revocation::message(key, *until, *since),
                ],
            );
        }
        c.send(&out).await?;
        for (key, until, _) in batch {
            expect_status(c.reply().await?)?;
            expect_status(c.reply().await?)?;
            // SAFETY: as above.
            unsafe { zone::with_table(p.zone, |t| t.delivered(key, *until)) };
        }
    }
}

/// The link of `p` is down: requests waiting for Redis coordinate in this node, and reports
/// are dropped (the locks expire by themselves).
fn link_down(p: &Provider) {
    let pid = id(p);
    UP.with(|u| u.borrow_mut().retain(|x| *x != pid));
    ASKS.with(|asks| {
        for a in asks.borrow_mut().iter_mut().filter(|a| a.provider == pid) {
            a.state = AskState::Answered(Claim::Unavailable);
        }
    });
    REPORTS.with(|r| r.borrow_mut().retain(|(x, _, _)| *x != pid));
    HELD.with(|h| h.borrow_mut().retain(|l| l.provider != pid));
}

/// Releases a lock only if it is still ours (it may have expired and been taken by another
/// node): the usual compare-and-delete of a Redis lock.
const RELEASE: &[u8] =
    b"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// Answers the requests' refresh questions and sends their reports, pipelined.
async fn coordinate(p: &Provider, names: &Names, c: &mut Conn) -> Result<(), LinkError> {
    let pid = id(p);
    let lock_ms = cluster_refresh::LOCK_TTL_MS.to_string();
    let result_secs = RESULT_TTL_SECS.to_string();
    loop {
        let mut out = Vec::new();
        let asked: Vec<(Key, Vec<u8>)> = ASKS.with(|asks| {
            asks.borrow_mut()
                .iter_mut()
                .filter(|a| a.provider == pid && matches!(a.state, AskState::Queued))
                .map(|a| {
                    a.state = AskState::Sent;
                    (a.key, lock_value())
                })
                .collect()
        });
        for (key, value) in &asked {
            wire::command(&mut out, &[b"GET", &names.refresh_result(key)]);
            wire::command(
                &mut out,
                &[
                    b"SET",
                    &names.refresh_lock(key),
                    value,
                    b"NX",
                    b"PX",
                    lock_ms.as_bytes(),
                ],
            );
        }
        let reports: Vec<(Key, Report)> = REPORTS.with(|r| {
            let mut r = r.borrow_mut();
            let (mine, others) = mem::take(&mut *r)
                .into_iter()
                .partition(|(x, _, _)| *x == pid);
            *r = others;
            mine.into_iter().map(|(_, k, rep)| (k, rep)).collect()
        });
        let mut replies = 0;
        for (key, report) in &reports {
            let stored: Option<&[u8]> = match report {
                Report::Done(sealed) => Some(sealed),
                Report::Ended => Some(cluster_refresh::ENDED),
                Report::Failed => None,
            };
            if let Some(v) = stored {
                wire::command(
                    &mut out,
                    &[
                        b"SET",
                        &names.refresh_result(key),
                        v,
                        b"EX",
                        result_secs.as_bytes(),
                    ],
                );
                replies += 1;
            }
            let held = HELD.with(|h| {
                let mut h = h.borrow_mut();
                let i = h.iter().position(|l| l.provider == pid && l.key == *key)?;
                Some(h.remove(i).value)
            });
            if let Some(value) = held {
                wire::command(
                    &mut out,
                    &[b"EVAL", RELEASE, b"1", &names.refresh_lock(key), &value],
                );
                replies += 1;
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        c.send(&out).await?;
        for (key, value) in asked {
            let result = c.reply().await?;
            let lock = c.reply().await?;
            let claim = cluster_refresh::claim(&result, &lock);
            if claim == Claim::Won {
                HELD.with(|h| {
                    h.borrow_mut().push(Held {
                        provider: pid,
                        key,
                        value,
                        at: now(),
                    })
                });
            }
            ASKS.with(|asks| {
                if let Some(a) = asks
                    .borrow_mut()
                    .iter_mut()
                    .find(|a| a.provider == pid && a.key == key)
                {
                    a.state = AskState::Answered(claim);
                }
            });
        }
        for _ in 0..replies {
            c.reply().await?;
        }
    }
}

/// A random value for a lock, so that only its holder releases it.
fn lock_value() -> Vec<u8> {
    let mut v = [0u8; 16];
    // Without randomness the lock still works; only its release could hit a successor's.
    let _ = getrandom::getrandom(&mut v);
    v.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .into_bytes()
}

/// A message from the subscription: another node's (or this node's own) revocation.
fn mirror(p: &Provider, reply: &Reply) {
    let Reply::Array(parts) = reply else {
        return;
    };
    if parts.first().and_then(Reply::bytes) != Some(b"message") {
        return;
    }
    let Some((key, until, since)) = parts
        .get(2)
        .and_then(Reply::bytes)
        .and_then(revocation::parse_message)
    else {
        return;
    };
    let now = now();
    // SAFETY: the task runs in a worker, where the zone exists.
    unsafe { zone::with_table(p.zone, |t| t.revoke_logins(&key, until, since, now)) };
}

/// TLS on a connection: the provider's context, and the host of the URL that the server's
/// certificate must be for.
#[derive(Clone, Copy)]
struct Tls<'a> {
    ctx: &'a TlsContext,
    host: &'a str,
}

/// One connection to Redis: an nginx peer connection whose events wake the task.
struct Conn {
    inner: Box<Inner>,
    /// Bytes read and not yet taken as replies.
    buf: Vec<u8>,
}

struct Inner {
    pc: ngx_peer_connection_t,
    /// A copy of the cycle's log for this connection (nginx writes the connection number
    /// into it).
    log: ngx_log_t,
    sockaddr: libc::sockaddr_storage,
    name: ngx_str_t,
    name_text: String,
    waker: Option<Waker>,
    /// The connection's own pool, with TLS (nginx's SSL connection lives in it); destroyed
    /// after the connection is closed.
    pool: *mut ngx_pool_t,
    /// With TLS: the last line nginx logged about this connection (its SSL layer's reason for
    /// a failure), which goes into the one outage warning instead of a line per attempt.
    logged: Option<String>,
    /// The TLS handshake ended, well or not, after it had to wait.
    handshake_ended: bool,
}

impl Conn {
    async fn connect(addr: SocketAddr, tls: Option<Tls<'_>>) -> io::Result<Conn> {
        // SAFETY: zeroed peer connection, log copy and sockaddr are valid starting points
        // (nginx's own modules start from ngx_pcalloc'ed ones).
        let mut inner = Box::new(unsafe {
            Inner {
                pc: mem::zeroed(),
                log: ptr::read(log()),
                sockaddr: mem::zeroed(),
                name: mem::zeroed(),
                name_text: addr.to_string(),
                waker: None,
                pool: ptr::null_mut(),
                logged: None,
                handshake_ended: false,
            }
        });
        inner.log.handler = None;
        inner.log.data = ptr::null_mut();
        inner.log.action = ptr::null_mut();
        if tls.is_some() {
            // What nginx's SSL layer says about a failure (at info level for peer errors) is
            // kept, not written: the link's warning carries it, once per outage.
            inner.log.writer = Some(keep_log_line);
            inner.log.wdata = ptr::addr_of_mut!(*inner).cast::<c_void>();
            inner.log.next = ptr::null_mut();
            inner.log.log_level = NGX_LOG_INFO as ngx_uint_t;
        }
        let socklen = write_sockaddr(&mut inner.sockaddr, addr);
        inner.name = ngx_str_t {
            len: inner.name_text.len(),
            data: inner.name_text.as_ptr().cast_mut(),
        };
        let this: *mut Inner = &mut *inner;
        // SAFETY: `inner` is boxed, so the pointers into it stay valid while the connection
        // lives; it is closed in Drop before the box goes.
        let rc = unsafe {
            let pc = &mut (*this).pc;
            pc.sockaddr = ptr::addr_of_mut!((*this).sockaddr).cast();
            pc.socklen = socklen;
            pc.name = ptr::addr_of_mut!((*this).name);
            pc.get = Some(ngx_event_get_peer);
            pc.log = ptr::addr_of_mut!((*this).log);
            pc.set_log_error(ngx::ffi::ngx_connection_log_error_e_NGX_ERROR_INFO);
            ngx_event_connect_peer(pc)
        };
        let mut conn = Conn {
            inner,
            buf: Vec::new(),
        };
        OPEN.with(|o| o.borrow_mut().push(this));
        if rc == NGX_ERROR as ngx_int_t || conn.inner.pc.connection.is_null() {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        // SAFETY: nginx just created the connection; its events are ours to set up.
        unsafe {
            let c = &mut *conn.inner.pc.connection;
            c.data = this.cast::<c_void>();
            // Closed by nginx like a keepalive connection when the worker shuts down, which
            // wakes the task (read handler) so that it ends.
            c.set_idle(1);
            (*c.read).handler = Some(event_handler);
            (*c.write).handler = Some(event_handler);
            (*c.read).set_cancelable(1);
            (*c.write).set_cancelable(1);
            if rc == NGX_AGAIN as ngx_int_t {
                ngx_add_timer(c.write, CONNECT_TIMEOUT);
            }
        }
        if rc == NGX_AGAIN as ngx_int_t {
            poll_fn(|cx| conn.poll_connected(cx)).await?;
        }
        if let Some(tls) = tls {
            conn.start_tls(tls).await?;
        }
        Ok(conn)
    }

    /// The TLS handshake on the connected socket, then the check of Redis's certificate.
    async fn start_tls(&mut self, tls: Tls<'_>) -> io::Result<()> {
        // SAFETY: the pool's log is this connection's, which lives in the same box.
        let pool = unsafe { ngx_create_pool(TLS_POOL_SIZE, &mut self.inner.log) };
        if pool.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        self.inner.pool = pool;
        let c: *mut ngx_connection_t = self.inner.pc.connection;
        // SAFETY: a live, connected peer connection, now with a pool that outlives it.
        let rc = unsafe {
            (*c).pool = pool;
            cluster_tls::start(c, tls.ctx, tls.host).map_err(io::Error::other)?;
            ngx_ssl_handshake(c)
        };
        if rc == NGX_AGAIN as ngx_int_t {
            // SAFETY: nginx's handshake handlers now drive the events; the SSL handler (called
            // when the handshake ends or times out) wakes this task.
            unsafe {
                (*(*c).ssl).handler = Some(handshake_ended);
                ngx_add_timer((*c).read, CONNECT_TIMEOUT);
            }
            poll_fn(|cx| self.poll_handshake(cx)).await?;
        } else if rc != NGX_OK as ngx_int_t {
            return Err(self.failure(io::ErrorKind::ConnectionReset));
        }
        // SAFETY: the handshake is done: the events are this module's again, and recv/send
        // are nginx's SSL ones.
        unsafe {
            (*(*c).read).handler = Some(event_handler);
            (*(*c).write).handler = Some(event_handler);
            cluster_tls::verify(c, tls.host).map_err(io::Error::other)
        }
    }

    fn poll_handshake(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        if !self.inner.handshake_ended {
            self.watch(cx);
            return Poll::Pending;
        }
        let c = self.inner.pc.connection;
        // SAFETY: a live connection with an SSL connection on it.
        unsafe {
            let rev = (*c).read;
            if (*rev).timer_set() != 0 {
                ngx_del_timer(rev);
            }
            if (*(*c).ssl).handshaked() != 0 {
                return Poll::Ready(Ok(()));
            }
            if (*rev).timedout() != 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the TLS handshake timed out",
                )));
            }
        }
        Poll::Ready(Err(self.failure(io::ErrorKind::ConnectionReset)))
    }

    /// With TLS, after a failed write: Redis may have closed the connection with an alert
    /// that says why (a TLS 1.3 client learns that its certificate was refused only after
    /// its side of the handshake, typically from a reset when it first writes). Reading it
    /// makes nginx's SSL layer log the alert, which then beats the bare reset as the reason.
    fn read_alert(&mut self) {
        if self.inner.pool.is_null() {
            return;
        }
        let before = self.inner.logged.take();
        let mut chunk = [0u8; 512];
        let c = self.connection();
        // SAFETY: a live connection; recv is always set on one (nginx's SSL recv here).
        unsafe {
            let recv = c.recv.unwrap_unchecked();
            recv(c, chunk.as_mut_ptr(), chunk.len());
        }
        if !self
            .inner
            .logged
            .as_ref()
            .is_some_and(|l| l.contains("alert"))
        {
            self.inner.logged = before;
        }
    }

    /// The error of a failed read, write or handshake: with TLS, the reason nginx's SSL
    /// layer gave; otherwise `kind`.
    fn failure(&mut self, kind: io::ErrorKind) -> io::Error {
        match self.inner.logged.take() {
            Some(line) => io::Error::other(cluster_link::tls_failure(&line)),
            None => kind.into(),
        }
    }

    fn connection(&mut self) -> &mut ngx_connection_t {
        // SAFETY: set by a successful connect and cleared only in Drop.
        unsafe { &mut *self.inner.pc.connection }
    }

    fn watch(&mut self, cx: &Context<'_>) {
        self.inner.waker = Some(cx.waker().clone());
    }

    /// nginx asked this connection to close (worker shutdown).
    fn closing(&mut self) -> bool {
        self.connection().close() != 0
    }

    fn poll_connected(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        let c = self.connection();
        // SAFETY: a live connection's events.
        let (wev, timedout, ready) =
            unsafe { (c.write, (*c.write).timedout() != 0, (*c.write).ready() != 0) };
        if timedout {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        if !ready {
            self.watch(cx);
            return Poll::Pending;
        }
        // SAFETY: as above.
        unsafe {
            if (*wev).timer_set() != 0 {
                ngx_del_timer(wev);
            }
        }
        let mut err: libc::c_int = 0;
        let mut len = mem::size_of_val(&err) as libc::socklen_t;
        // SAFETY: getsockopt on the connection's own socket, into a local int.
        let rc = unsafe {
            libc::getsockopt(
                c.fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                ptr::addr_of_mut!(err).cast(),
                &mut len,
            )
        };
        if rc == -1 {
            return Poll::Ready(Err(io::Error::last_os_error()));
        }
        if err != 0 {
            return Poll::Ready(Err(io::Error::from_raw_os_error(err)));
        }
        Poll::Ready(Ok(()))
    }

    /// Reads what is there into `buf`: `Ready(Ok)` once something came.
    fn poll_fill(&mut self, cx: &Context<'_>) -> Poll<io::Result<()>> {
        let mut chunk = [0u8; 4096];
        let c = self.connection();
        // SAFETY: a live connection; recv is always set on one.
        let (n, rev) = unsafe {
            if (*c.read).timedout() != 0 {
                return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
            }
            let recv = c.recv.unwrap_unchecked();
            (recv(c, chunk.as_mut_ptr(), chunk.len()), c.read)
        };
        if n > 0 {
            self.buf.extend_from_slice(&chunk[..n as usize]);
            return Poll::Ready(Ok(()));
        }
        if n == 0 {
            return Poll::Ready(Err(self.failure(io::ErrorKind::UnexpectedEof)));
        }
        if n != NGX_AGAIN as isize {
            return Poll::Ready(Err(self.failure(io::ErrorKind::ConnectionReset)));
        }
        // SAFETY: re-arms the read event of a live connection.
        if unsafe { ngx_handle_read_event(rev, 0) } != NGX_OK as ngx_int_t {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        self.watch(cx);
        Poll::Pending
    }

    /// Writes all of `data`, waiting for the socket when it is full.
    async fn send(&mut self, mut data: &[u8]) -> io::Result<()> {
        poll_fn(|cx| {
            while !data.is_empty() {
                let c = self.connection();
                // SAFETY: a live connection; send is always set on one.
                let (n, wev) = unsafe {
                    let send = c.send.unwrap_unchecked();
                    (send(c, data.as_ptr().cast_mut(), data.len()), c.write)
                };
                if n > 0 {
                    data = &data[n as usize..];
                    continue;
                }
                if n != NGX_AGAIN as isize {
                    self.read_alert();
                    return Poll::Ready(Err(self.failure(io::ErrorKind::BrokenPipe)));
                }
                // SAFETY: re-arms the write event of a live connection.
                if unsafe { ngx_handle_write_event(wev, 0) } != NGX_OK as ngx_int_t {
                    return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
                }
                self.watch(cx);
                return Poll::Pending;
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// The next reply, waiting at most [`REPLY_TIMEOUT`] for it.
    async fn reply(&mut self) -> Result<Reply, LinkError> {
        loop {
            if let Some(r) = wire::take_reply(&mut self.buf)? {
                let rev = self.connection().read;
                // SAFETY: the read event of a live connection.
                unsafe {
                    if (*rev).timer_set() != 0 {
                        ngx_del_timer(rev);
                    }
                }
                return Ok(r);
            }
            let rev = self.connection().read;
            // SAFETY: as above.
            unsafe {
                if (*rev).timer_set() == 0 {
                    ngx_add_timer(rev, REPLY_TIMEOUT);
                }
            }
            poll_fn(|cx| self.poll_fill(cx)).await?;
        }
    }
}

impl Inner {
    /// Closes the connection (after TLS's close_notify) and frees its pool; a second call does
    /// nothing.
    fn close(&mut self) {
        if !self.pc.connection.is_null() {
            // SAFETY: the connection is ours; closing also removes its timers and events.
            unsafe {
                cluster_tls::shutdown(self.pc.connection);
                ngx_close_connection(self.pc.connection);
            }
            self.pc.connection = ptr::null_mut();
        }
        if !self.pool.is_null() {
            // SAFETY: the connection that used the pool is closed.
            unsafe { ngx_destroy_pool(self.pool) };
            self.pool = ptr::null_mut();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let this: *mut Inner = &mut *self.inner;
        OPEN.with(|o| o.borrow_mut().retain(|p| *p != this));
        self.inner.close();
    }
}

/// `exit_process`: closes the links' connections before nginx looks for sockets left open. A
/// worker that stops while a task waits for a connect, a handshake or a reply (a reload just
/// after a start, or while Redis refuses the password) would otherwise leave them to the
/// cycle's end, and nginx logs "open socket left" and aborts.
///
/// # Safety
/// nginx calls it with the exiting worker's cycle, after the event loop stopped.
pub unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    for inner in OPEN.with(|o| std::mem::take(&mut *o.borrow_mut())) {
        // SAFETY: registered by a live Conn, whose Drop removes it first; its box is alive.
        unsafe { (*inner).close() };
    }
}

/// The SSL handler of a connection whose handshake had to wait: it ended (or timed out).
unsafe extern "C" fn handshake_ended(c: *mut ngx_connection_t) {
    // SAFETY: nginx passes a connection whose `data` is its boxed Inner.
    unsafe {
        let inner: *mut Inner = (*c).data.cast();
        (*inner).handshake_ended = true;
        if let Some(w) = (*inner).waker.take() {
            w.wake();
        }
    }
}

/// The log writer of a TLS connection: keeps the line for the outage warning. Alerts (the
/// system failing, not Redis) still reach the error log.
unsafe extern "C" fn keep_log_line(
    log: *mut ngx_log_t,
    level: ngx_uint_t,
    buf: *mut u8,
    len: usize,
) {
    // SAFETY: nginx passes the connection's log, whose `wdata` is its boxed Inner, and the
    // formatted line of `len` bytes.
    let (inner, line) = unsafe {
        let inner: *mut Inner = (*log).wdata.cast();
        (
            inner,
            String::from_utf8_lossy(slice::from_raw_parts(buf, len)),
        )
    };
    if level <= NGX_LOG_ALERT as ngx_uint_t {
        ngx_log_error!(
            level,
            self::log(),
            "oidc: cluster store: {}",
            cluster_link::log_message(&line)
        );
    }
    // SAFETY: as above; the Inner outlives its connection.
    unsafe { (*inner).logged = Some(line.into_owned()) };
}

/// Read and write events of both connections: wake the task that owns the connection.
unsafe extern "C" fn event_handler(ev: *mut ngx_event_t) {
    // SAFETY: nginx passes an event of a connection whose `data` is its boxed Inner.
    unsafe {
        let c: *mut ngx_connection_t = (*ev).data.cast();
        let inner: *mut Inner = (*c).data.cast();
        if let Some(w) = (*inner).waker.take() {
            w.wake();
        }
    }
}

/// The C socket address `sa` of `len` bytes (IPv4 or IPv6) with `port`; `None` for other
/// families.
///
/// # Safety
/// `sa` must point to `len` readable bytes of a socket address.
unsafe fn read_sockaddr(
    sa: *const libc::sockaddr,
    len: libc::socklen_t,
    port: u16,
) -> Option<SocketAddr> {
    let len = len as usize;
    // SAFETY: per this function's contract; the family decides the shape, checked against the
    // length.
    unsafe {
        match i32::from((*sa).sa_family) {
            libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
                let sin = &*sa.cast::<libc::sockaddr_in>();
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::new(ip.into(), port))
            }
            libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
                let sin6 = &*sa.cast::<libc::sockaddr_in6>();
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::new(ip.into(), port))
            }
            _ => None,
        }
    }
}

/// Fills `out` with `addr` as a C socket address; returns its length.
fn write_sockaddr(out: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for any socket address.
            let sin =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above.
            let sin6 =
                unsafe { &mut *(out as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}
