//! The only place with nginx types. A request reads top-down through three layers, and no file
//! names one of a layer above it:
//! - [`handler`]: what nginx calls (the access-phase handler, the `/oauth2/*` endpoints,
//!   output filters, variables); this file and [`directives`] are the module and its
//!   configuration;
//! - [`flow`]: one OpenID Connect exchange each (login, callback, refresh, bearer, logout);
//! - [`service`]: what the flows share (provider documents, the request's outcome, cookies,
//!   the fetch subrequest, the shared zone, the request context, nginx helpers), standing on
//!   the pure layers (`crate::oidc`, `crate::session`, `crate::authz`, ...).

mod directives;
mod flow;
mod handler;
mod service;

use core::ffi::{c_char, c_void};
use core::ptr::{addr_of, addr_of_mut};
use std::cell::{Cell, RefCell};

use ngx::ffi::{
    ngx_command_t, ngx_conf_t, ngx_http_module_t, ngx_http_request_t, ngx_int_t, ngx_module_t,
    ngx_shm_zone_t, ngx_uint_t, NGX_ERROR, NGX_HTTP_MODULE, NGX_LOG_ERR, NGX_LOG_WARN, NGX_OK,
};
use ngx::http::{HttpModule, HttpModuleLocationConf, HttpModuleMainConf, Merge, MergeConfigError};

use crate::authz::{Role, Rules};
use crate::conf::provider::ProviderConf;
use crate::oidc::ProviderCache;
use crate::session::cache::SessionCache;
use crate::session::Verified;

/// One `oidc_provider` block and what this worker has learnt about the provider.
pub struct Provider {
    pub conf: ProviderConf,
    /// Discovery document and JWKS, cached per worker (workers share nothing but the config).
    pub cache: RefCell<ProviderCache>,
    /// Recently opened session cookies of this worker.
    pub sessions: RefCell<SessionCache<Verified>>,
    /// Recently verified bearer tokens of this worker (until they expire).
    pub bearers: RefCell<SessionCache<Verified>>,
    /// Refreshes in flight and logged-out sessions, shared by all workers.
    pub zone: *mut ngx_shm_zone_t,
    /// The TLS client context of a `rediss://` cluster store.
    pub cluster_tls: Option<service::cluster_tls::Context>,
    /// Some location passes the access token upstream (or `$oidc_access_token` is used), so
    /// sessions must keep it.
    pub keep_access_token: Cell<bool>,
    /// `$oidc_id_token` is used: sessions keep the ID token whatever its size.
    pub keep_id_token: Cell<bool>,
    /// `redirect_uri` when it holds variables.
    pub redirect_uri: Option<service::values::Complex>,
    /// `post_logout_redirect_uri` when it holds variables.
    pub post_logout_redirect_uri: Option<service::values::Complex>,
    /// `extra_auth_args`: each parameter's name and its value (which may hold variables).
    pub extra_auth_args: Vec<(String, service::values::Complex)>,
    /// nginx's `resolver` of the http block, when `cluster_store` names a host that it looks up
    /// at every connect (set at postconfiguration).
    pub cluster_resolver: Option<ngx::async_::resolver::Resolver>,
}

#[derive(Default)]
pub struct MainConf {
    pub providers: Vec<Provider>,
}

impl MainConf {
    pub fn find(&self, name: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.conf.name == name)
    }

    /// The provider a location names: by index, or by evaluating its variables for `r`.
    /// `None` (logged at `error`, naming the directive and the value) when no `oidc_provider`
    /// has that name: the request gets a 500, since only the configuration can fix it.
    ///
    /// # Safety
    /// `r` must be a live request.
    pub unsafe fn resolve(
        &self,
        r: *mut ngx_http_request_t,
        which: ProviderRef,
        directive: &str,
    ) -> Option<&Provider> {
        let cv = match which {
            ProviderRef::Index(i) => return self.providers.get(i),
            ProviderRef::Named(cv) => cv,
        };
        // SAFETY: per this function's contract.
        let name = unsafe { cv.eval(r) }.unwrap_or_default();
        let found = self.find(&name).map(|i| &self.providers[i]);
        if found.is_none() {
            let known: Vec<&str> = self
                .providers
                .iter()
                .map(|p| p.conf.name.as_str())
                .collect();
            // SAFETY: a live request has a connection with a log.
            ngx::ngx_log_error!(
                NGX_LOG_ERR,
                unsafe { (*(*r).connection).log },
                "oidc: {} \"{}\" gives provider \"{}\", but no oidc_provider has that name (defined: {})",
                directive,
                cv.template(),
                name,
                known.join(", ")
            );
        }
        found
    }
}

/// The provider of `oidc_auth` or `oidc_endpoints`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ProviderRef {
    /// Named literally: checked by `nginx -t`.
    Index(usize),
    /// Named through variables (`oidc_auth $tenant;`): looked up per request.
    Named(service::values::Complex),
}

/// `oidc_auth` of a location: unset inherits, `off` disables, otherwise a provider.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthMode {
    #[default]
    Unset,
    Off,
    Provider(ProviderRef),
}

/// `oidc_unauth_action`: what a request without a session gets.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub enum UnauthAction {
    /// Page navigations are sent to login, everything else gets 401.
    #[default]
    Auto,
    Redirect,
    Unauthorized,
}

#[derive(Default)]
pub struct LocConf {
    pub auth: AuthMode,
    /// `oidc_endpoints`: this location serves /oauth2/* for that provider (not inherited).
    pub endpoints: Option<ProviderRef>,
    /// `oidc_metrics`: this location serves the Prometheus text (not inherited).
    pub metrics: bool,
    pub pass_access_token: Option<bool>,
    pub set_authorization_header: Option<bool>,
    pub unauth_action: Option<UnauthAction>,
    /// `oidc_bearer`: accept `Authorization: Bearer <JWT>` instead of a cookie.
    pub bearer: Option<bool>,
    /// `oidc_skip_preflight`: CORS preflights pass to the upstream without a session.
    pub skip_preflight: Option<bool>,
    /// `oidc_require_*` and `oidc_email_domains`: who may pass once logged in.
    pub rules: Rules,
}

impl Merge for LocConf {
    fn merge(&mut self, prev: &LocConf) -> Result<(), MergeConfigError> {
        if self.auth == AuthMode::Unset {
            self.auth = prev.auth;
        }
        self.pass_access_token = self.pass_access_token.or(prev.pass_access_token);
        self.set_authorization_header = self
            .set_authorization_header
            .or(prev.set_authorization_header);
        self.unauth_action = self.unauth_action.or(prev.unauth_action);
        self.bearer = self.bearer.or(prev.bearer);
        self.skip_preflight = self.skip_preflight.or(prev.skip_preflight);
        self.rules.inherit(&prev.rules);
        Ok(())
    }
}

impl LocConf {
    pub fn passes_access_token(&self) -> bool {
        self.pass_access_token == Some(true) || self.set_authorization_header == Some(true)
    }
}

pub struct Module;

impl HttpModule for Module {
    fn module() -> &'static ngx_module_t {
        // SAFETY: the module static is only written by nginx while loading the configuration,
        // before any request handler can run.
        unsafe { &*addr_of!(ngx_http_oidc_module) }
    }

    unsafe extern "C" fn preconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx passes the live configuration being parsed.
        unsafe { handler::variables::register(cf) }
    }

    unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
        // SAFETY: nginx passes the live configuration; the http main conf exists by now.
        unsafe {
            handler::variables::keep_used_tokens(cf);
            if service::cluster::configure(cf) != NGX_OK as ngx_int_t {
                return NGX_ERROR as ngx_int_t;
            }
            handler::access::install(cf)
        }
    }

    unsafe extern "C" fn merge_loc_conf(
        cf: *mut ngx_conf_t,
        prev: *mut c_void,
        conf: *mut c_void,
    ) -> *mut c_char {
        // SAFETY: nginx passes this module's location confs of a block and its parent.
        unsafe {
            let prev = &*(prev as *const LocConf);
            let conf = &mut *(conf as *mut LocConf);
            // Checked on the block that names the rule, not on each block inheriting it.
            let own_roles = conf.rules.roles.is_some();
            if conf.merge(prev).is_err() {
                return ngx::core::NGX_CONF_ERROR;
            }
            if let (AuthMode::Provider(ProviderRef::Index(i)), true) = (conf.auth, own_roles) {
                if let Some(p) = Module::main_conf(&*cf).and_then(|m| m.providers.get(i)) {
                    for role in conf.rules.foreign_client_roles(&p.conf.client_id) {
                        let Role::Client { client, role } = role else {
                            continue;
                        };
                        ngx::ngx_conf_log_error!(
                            NGX_LOG_WARN,
                            cf,
                            "oidc_require_roles: \"{}:{}\" is a role of client \"{}\", but \
                             provider \"{}\" has client_id \"{}\": Keycloak puts another \
                             client's roles into the tokens only with \"Full scope allowed\" or \
                             a scope mapping; for this client's role write \"{}:{}\"",
                            client,
                            role,
                            client,
                            p.conf.name,
                            p.conf.client_id,
                            p.conf.client_id,
                            role
                        );
                    }
                }
            }
            // Sessions keep the access token only when some location needs it: it is the
            // biggest part of a session.
            if let (AuthMode::Provider(which), true) = (conf.auth, conf.passes_access_token()) {
                if let Some(main) = Module::main_conf(&*cf) {
                    let chosen = match which {
                        ProviderRef::Index(i) => i..i + 1,
                        // Any provider may serve this location.
                        ProviderRef::Named(_) => 0..main.providers.len(),
                    };
                    for p in &main.providers[chosen] {
                        p.keep_access_token.set(true);
                    }
                }
            }
        }
        core::ptr::null_mut()
    }
}

// SAFETY: the configuration types below are the ones created by the HttpModule defaults.
unsafe impl HttpModuleMainConf for Module {
    type MainConf = MainConf;
}

// SAFETY: see above.
unsafe impl HttpModuleLocationConf for Module {
    type LocationConf = LocConf;
}

static NGX_HTTP_OIDC_MODULE_CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(Module::preconfiguration),
    postconfiguration: Some(Module::postconfiguration),
    create_main_conf: Some(Module::create_main_conf),
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(Module::create_loc_conf),
    merge_loc_conf: Some(Module::merge_loc_conf),
};

#[no_mangle]
#[used]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_oidc_module: ngx_module_t = ngx_module_t {
    ctx: addr_of!(NGX_HTTP_OIDC_MODULE_CTX) as *mut c_void,
    // SAFETY: a pointer to the first element of a static table that nginx only reads.
    commands: unsafe { addr_of_mut!(directives::NGX_HTTP_OIDC_COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    init_process: Some(service::cluster::init_process),
    exit_process: Some(service::cluster::exit_process),
    ..ngx_module_t::default()
};

ngx::ngx_modules!(ngx_http_oidc_module);

/// Shorthand for a `char *` result of a directive handler.
pub type ConfResult = *mut c_char;

/// Keeps `ngx_command_t` tables in one static array without `Sync` noise.
pub type Commands<const N: usize> = [ngx_command_t; N];
