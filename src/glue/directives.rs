//! Directive table and handlers: `oidc_provider {}`, `oidc_auth`, `oidc_endpoints`,
//! `oidc_metrics`, the location switches and the authorization rules (`oidc_require_*`,
//! `oidc_email_domains`).

use core::ffi::c_void;
use core::ptr;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;

use ngx::core::{NGX_CONF_ERROR, NGX_CONF_OK};
use ngx::ffi::{
    ngx_command_t, ngx_conf_parse, ngx_conf_t, ngx_http_core_loc_conf_t, ngx_str_t, ngx_uint_t,
    NGX_CONF_1MORE, NGX_CONF_2MORE, NGX_CONF_BLOCK, NGX_CONF_NOARGS, NGX_CONF_TAKE1,
    NGX_HTTP_LOC_CONF, NGX_HTTP_MAIN_CONF, NGX_HTTP_SRV_CONF, NGX_LOG_EMERG,
};
use ngx::http::{HttpModuleLocationConf, HttpModuleMainConf, NgxHttpCoreModule};
use ngx::ngx_conf_log_error;

use super::service::cluster_tls;
use super::service::values::Complex;
use super::service::zone;
use super::{
    AuthMode, Commands, ConfResult, LocConf, MainConf, Module, Provider, ProviderRef, UnauthAction,
};
use crate::conf::provider::{has_variables, ProviderBuilder, ProviderConf};
use crate::session::cache::SessionCache;

const NGX_HTTP_MAIN_CONF_OFFSET: ngx_uint_t = 0;
const NGX_HTTP_LOC_CONF_OFFSET: ngx_uint_t = 16;

/// Sessions remembered per worker and provider; a miss only costs one cookie decode.
const SESSION_CACHE_SIZE: usize = 512;

const LOC_ANY: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

pub static mut NGX_HTTP_OIDC_COMMANDS: Commands<14> = [
    ngx_command_t {
        name: ngx::ngx_string!("oidc_provider"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_BLOCK | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(oidc_provider),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx::ngx_string!("oidc_auth"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1)
            as ngx_uint_t,
        set: Some(oidc_auth),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx::ngx_string!("oidc_endpoints"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(oidc_endpoints),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx::ngx_string!("oidc_metrics"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as ngx_uint_t,
        set: Some(oidc_metrics),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx::ngx_string!("oidc_pass_access_token"),
        type_: (LOC_ANY | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(oidc_flag),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx::ngx_string!("oidc_set_authorization_header"),
        type_: (LOC_ANY | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(oidc_flag),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx::ngx_string!("oidc_unauth_action"),
        type_: (LOC_ANY | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(oidc_unauth_action),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx::ngx_string!("oidc_bearer"),
        type_: (LOC_ANY | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(oidc_flag),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx::ngx_string!("oidc_skip_preflight"),
        type_: (LOC_ANY | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(oidc_flag),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx::ngx_string!("oidc_require_groups"),
        type_: (LOC_ANY | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(oidc_rule),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx::ngx_string!("oidc_require_roles"),
        type_: (LOC_ANY | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(oidc_rule),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx::ngx_string!("oidc_require_claim"),
        type_: (LOC_ANY | NGX_CONF_2MORE) as ngx_uint_t,
        set: Some(oidc_rule),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx::ngx_string!("oidc_email_domains"),
        type_: (LOC_ANY | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(oidc_rule),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

/// The arguments of the directive being parsed, as UTF-8 strings.
///
/// # Safety
/// `cf` must be the configuration currently being parsed by nginx.
unsafe fn args<'a>(cf: *mut ngx_conf_t) -> Result<Vec<&'a str>, usize> {
    // SAFETY: nginx keeps cf->args (an array of ngx_str_t) alive while the handler runs.
    let elts = unsafe { (*(*cf).args).as_slice::<ngx_str_t>() };
    elts.iter()
        .enumerate()
        .map(|(i, s)| {
            // SAFETY: each ngx_str_t points to `len` bytes owned by the configuration pool.
            let bytes = unsafe { core::slice::from_raw_parts(s.data, s.len) };
            core::str::from_utf8(bytes).map_err(|_| i)
        })
        .collect()
}

fn emerg(cf: *mut ngx_conf_t, msg: &str) -> ConfResult {
    ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", msg);
    NGX_CONF_ERROR
}

struct BlockState {
    builder: ProviderBuilder,
    name: String,
    conf_prefix: PathBuf,
}

extern "C" fn oidc_provider(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> ConfResult {
    // SAFETY: nginx calls this handler with the configuration being parsed.
    let Ok(argv) = (unsafe { args(cf) }) else {
        return emerg(cf, "oidc_provider: the name must be UTF-8");
    };
    let name = argv[1].to_string();
    // SAFETY: `conf` is this module's main conf, created by create_main_conf.
    let main = unsafe { &mut *(conf as *mut MainConf) };
    if main.find(&name).is_some() {
        return emerg(
            cf,
            &format!("oidc_provider \"{name}\" is defined twice; give each block its own name"),
        );
    }
    // SAFETY: cf->cycle is the cycle being configured; conf_prefix is set before parsing.
    let conf_prefix = unsafe { (*(*cf).cycle).conf_prefix.as_bytes() };
    let mut state = BlockState {
        builder: ProviderBuilder::new(&name),
        name: name.clone(),
        conf_prefix: PathBuf::from(String::from_utf8_lossy(conf_prefix).into_owned()),
    };
    // SAFETY: the usual nginx pattern for a block with its own syntax: save cf, install a
    // line handler, parse the block, restore cf. `state` outlives the nested parse.
    let rv = unsafe {
        let saved = *cf;
        (*cf).handler = Some(provider_line);
        (*cf).handler_conf = (&mut state as *mut BlockState).cast();
        let rv = ngx_conf_parse(cf, ptr::null_mut());
        *cf = saved;
        rv
    };
    if rv != NGX_CONF_OK {
        return rv;
    }
    // SAFETY: cf is the configuration being parsed.
    let Some(zone) = (unsafe { zone::add(cf, &name) }) else {
        return emerg(
            cf,
            &format!("oidc_provider \"{name}\": cannot add shared zone oidc_{name}"),
        );
    };
    let conf = match state.builder.build() {
        Ok(conf) => conf,
        Err(e) => return emerg(cf, &e.to_string()),
    };
    // SAFETY: cf is the configuration being parsed.
    let Some(compiled) = (unsafe { compile_values(cf, &conf) }) else {
        return emerg(
            cf,
            &format!("oidc_provider \"{name}\": a value with variables did not compile"),
        );
    };
    let (redirect_uri, post_logout_redirect_uri, extra_auth_args) = compiled;
    let cluster_tls = match conf.cluster.as_ref().and_then(|c| c.tls.as_ref()) {
        // SAFETY: cf is the configuration being parsed; the context lives in its pool.
        Some(tls) => match unsafe { cluster_tls::Context::create(cf, tls) } {
            Ok(ctx) => Some(ctx),
            Err(e) => return emerg(cf, &format!("oidc_provider \"{name}\": {e}")),
        },
        None => None,
    };
    main.providers.push(Provider {
        conf,
        cache: RefCell::new(Default::default()),
        sessions: RefCell::new(SessionCache::new(SESSION_CACHE_SIZE)),
        bearers: RefCell::new(SessionCache::new(SESSION_CACHE_SIZE)),
        zone,
        cluster_tls,
        keep_access_token: Cell::new(false),
        keep_id_token: Cell::new(false),
        redirect_uri,
        post_logout_redirect_uri,
        extra_auth_args,
        cluster_resolver: None,
    });
    NGX_CONF_OK
}

/// The compiled forms of a provider's values that may hold variables: `redirect_uri` and
/// `post_logout_redirect_uri` (only when they do), and every `extra_auth_args` value.
type Compiled = (Option<Complex>, Option<Complex>, Vec<(String, Complex)>);

/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn compile_values(cf: *mut ngx_conf_t, conf: &ProviderConf) -> Option<Compiled> {
    let optional = |value: Option<&str>| match value.filter(|v| has_variables(v)) {
        // SAFETY: per this function's contract.
        Some(v) => unsafe { Complex::compile(cf, v) }.map(Some),
        None => Some(None),
    };
    let redirect_uri = optional(Some(&conf.redirect_uri))?;
    let post_logout = optional(conf.post_logout_redirect_uri.as_deref())?;
    let extra = conf
        .extra_auth_args
        .iter()
        // SAFETY: per this function's contract.
        .map(|a| unsafe { Complex::compile(cf, &a.value) }.map(|cv| (a.name.clone(), cv)))
        .collect::<Option<Vec<_>>>()?;
    Some((redirect_uri, post_logout, extra))
}

extern "C" fn provider_line(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> ConfResult {
    // SAFETY: handler_conf was set to a live BlockState by oidc_provider.
    let state = unsafe { &mut *(conf as *mut BlockState) };
    // SAFETY: called by ngx_conf_parse for one line of the block.
    let Ok(argv) = (unsafe { args(cf) }) else {
        return emerg(
            cf,
            &format!("oidc_provider \"{}\": values must be UTF-8", state.name),
        );
    };
    let prefix = state.conf_prefix.clone();
    let resolve = move |p: &str| {
        if p.starts_with('/') {
            PathBuf::from(p)
        } else {
            prefix.join(p)
        }
    };
    match state.builder.set(argv[0], &argv[1..], &resolve) {
        Ok(()) => NGX_CONF_OK,
        Err(e) => emerg(cf, &format!("oidc_provider \"{}\": {e}", state.name)),
    }
}

/// The part every location directive shares: this block's [`LocConf`] and the directive's
/// words (its name first) for `parse`, whose error text becomes the `nginx -t` message.
fn location_directive(
    cf: *mut ngx_conf_t,
    conf: *mut c_void,
    parse: impl FnOnce(&mut LocConf, &[&str]) -> Result<(), String>,
) -> ConfResult {
    // SAFETY: nginx passes this module's location conf for the block being parsed.
    let lcf = unsafe { &mut *(conf as *mut LocConf) };
    // SAFETY: called by nginx while parsing this directive.
    let argv = match unsafe { args(cf) } {
        Ok(argv) => argv,
        Err(_) => return emerg(cf, "oidc: a directive's values must be UTF-8"),
    };
    match parse(lcf, &argv) {
        Ok(()) => NGX_CONF_OK,
        Err(why) => emerg(cf, &why),
    }
}

/// Refuses a directive given twice in one block.
fn once(directive: &str, already: bool) -> Result<(), String> {
    if already {
        Err(format!("{directive} is duplicate in this block"))
    } else {
        Ok(())
    }
}

/// The provider a location directive names: literally (checked now, `nginx -t` names an
/// unknown one) or through variables (looked up per request).
fn provider_ref(cf: *mut ngx_conf_t, directive: &str, name: &str) -> Result<ProviderRef, String> {
    if has_variables(name) {
        // SAFETY: cf is the configuration being parsed.
        return unsafe { Complex::compile(cf, name) }
            .map(ProviderRef::Named)
            .ok_or_else(|| format!("{directive}: \"{name}\" did not compile"));
    }
    // SAFETY: cf is an http-level configuration, so it has a main conf for this module.
    let main = unsafe { Module::main_conf(&*cf) };
    main.and_then(|m| m.find(name))
        .map(ProviderRef::Index)
        .ok_or_else(|| {
            format!(
                "{directive}: unknown provider \"{name}\"; define it before use with \
                 `oidc_provider {name} {{ issuer ...; client_id ...; }}` in the http block"
            )
        })
}

/// Makes this location answer with `handler` (its content phase).
fn set_content_handler(
    cf: *mut ngx_conf_t,
    directive: &str,
    handler: ngx::ffi::ngx_http_handler_pt,
) -> Result<(), String> {
    // SAFETY: cf is a location block, so the core module has a location conf for it.
    let clcf: &mut ngx_http_core_loc_conf_t = unsafe { NgxHttpCoreModule::location_conf_mut(&*cf) }
        .ok_or_else(|| format!("{directive}: no location configuration"))?;
    clcf.handler = handler;
    Ok(())
}

extern "C" fn oidc_auth(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> ConfResult {
    location_directive(cf, conf, |lcf, argv| {
        once("oidc_auth", lcf.auth != AuthMode::Unset)?;
        lcf.auth = match argv[1] {
            "off" => AuthMode::Off,
            name => AuthMode::Provider(provider_ref(cf, "oidc_auth", name)?),
        };
        Ok(())
    })
}

extern "C" fn oidc_endpoints(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> ConfResult {
    location_directive(cf, conf, |lcf, argv| {
        once("oidc_endpoints", lcf.endpoints.is_some())?;
        if lcf.metrics {
            return Err(METRICS_WITH_ENDPOINTS.into());
        }
        lcf.endpoints = Some(provider_ref(cf, "oidc_endpoints", argv[1])?);
        set_content_handler(
            cf,
            "oidc_endpoints",
            Some(super::handler::endpoints::content_handler),
        )
    })
}

const METRICS_WITH_ENDPOINTS: &str = "oidc_metrics and oidc_endpoints cannot share a \
    location: give the metrics their own, e.g. \
    `location = /metrics { oidc_metrics; allow 10.0.0.0/8; deny all; }`";

/// `oidc_metrics`: this location answers with every provider's counters (Prometheus text).
extern "C" fn oidc_metrics(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> ConfResult {
    location_directive(cf, conf, |lcf, _| {
        once("oidc_metrics", lcf.metrics)?;
        if lcf.endpoints.is_some() {
            return Err(METRICS_WITH_ENDPOINTS.into());
        }
        lcf.metrics = true;
        set_content_handler(
            cf,
            "oidc_metrics",
            Some(super::handler::metrics::content_handler),
        )
    })
}

/// `oidc_pass_access_token`, `oidc_set_authorization_header`, `oidc_bearer`,
/// `oidc_skip_preflight`: `on` or `off`, refused twice in one block.
extern "C" fn oidc_flag(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> ConfResult {
    location_directive(cf, conf, |lcf, argv| {
        let directive = argv[0];
        let slot = match directive {
            "oidc_pass_access_token" => &mut lcf.pass_access_token,
            "oidc_set_authorization_header" => &mut lcf.set_authorization_header,
            "oidc_bearer" => &mut lcf.bearer,
            "oidc_skip_preflight" => &mut lcf.skip_preflight,
            _ => return Err(format!("{directive}: not an on/off directive")),
        };
        once(directive, slot.is_some())?;
        *slot = Some(match argv[1] {
            "on" => true,
            "off" => false,
            other => {
                return Err(format!(
                    "{directive}: \"{other}\" must be \"on\" or \"off\""
                ))
            }
        });
        Ok(())
    })
}

extern "C" fn oidc_unauth_action(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> ConfResult {
    location_directive(cf, conf, |lcf, argv| {
        once("oidc_unauth_action", lcf.unauth_action.is_some())?;
        lcf.unauth_action = Some(match argv[1] {
            "auto" => UnauthAction::Auto,
            "redirect" => UnauthAction::Redirect,
            "401" => UnauthAction::Unauthorized,
            other => {
                return Err(format!(
                    "oidc_unauth_action: \"{other}\" must be auto, redirect or 401"
                ))
            }
        });
        Ok(())
    })
}

/// `oidc_require_groups`, `oidc_require_roles`, `oidc_require_claim`, `oidc_email_domains`:
/// parsed by the pure rules code, which names the directive in its errors.
extern "C" fn oidc_rule(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> ConfResult {
    location_directive(cf, conf, |lcf, argv| {
        lcf.rules
            .set(argv[0], &argv[1..])
            .map_err(|e| e.to_string())
    })
}
