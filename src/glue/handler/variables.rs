//! `$oidc_fetch_url`, `$oidc_user`, `$oidc_email`, `$oidc_groups`, `$oidc_claim_<name>`,
//! `$oidc_access_token`, `$oidc_id_token`.

use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_http_variable_t,
    ngx_http_variable_value_t, ngx_int_t, ngx_str_t, ngx_uint_t, NGX_ERROR,
    NGX_HTTP_VAR_NOCACHEABLE, NGX_HTTP_VAR_PREFIX, NGX_OK,
};
use ngx::http::{HttpModuleMainConf, NgxHttpCoreModule};

use crate::glue::service::ctx;
use crate::glue::service::http::{bytes, pool_str};
use crate::glue::Module;
use crate::session::Verified;

const CLAIM_PREFIX: &str = "oidc_claim_";
const ACCESS_TOKEN: &str = "oidc_access_token";
const ID_TOKEN: &str = "oidc_id_token";

type Getter = unsafe extern "C" fn(
    *mut ngx_http_request_t,
    *mut ngx_http_variable_value_t,
    usize,
) -> ngx_int_t;

/// What a session variable renders: the `data` its getter is registered with.
#[derive(Clone, Copy)]
enum Field {
    User,
    Email,
    Groups,
    AccessToken,
    IdToken,
}

const FIELDS: [Field; 5] = [
    Field::User,
    Field::Email,
    Field::Groups,
    Field::AccessToken,
    Field::IdToken,
];

/// # Safety
/// `cf` must be the http configuration being parsed (preconfiguration).
pub unsafe fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    let field = |f: Field| {
        (
            session_field as Getter,
            f as usize,
            NGX_HTTP_VAR_NOCACHEABLE,
        )
    };
    let vars: [(&str, (Getter, usize, u32)); 7] = [
        ("oidc_fetch_url", (fetch_url, 0, NGX_HTTP_VAR_NOCACHEABLE)),
        (ACCESS_TOKEN, field(Field::AccessToken)),
        (ID_TOKEN, field(Field::IdToken)),
        ("oidc_user", field(Field::User)),
        ("oidc_email", field(Field::Email)),
        ("oidc_groups", field(Field::Groups)),
        (
            CLAIM_PREFIX,
            (claim, 0, NGX_HTTP_VAR_NOCACHEABLE | NGX_HTTP_VAR_PREFIX),
        ),
    ];
    for (name, (get, data, flags)) in vars {
        let mut name = ngx_str_t {
            len: name.len(),
            data: name.as_ptr() as *mut u8,
        };
        // SAFETY: nginx copies the name; cf is live during preconfiguration.
        let v = unsafe { ngx_http_add_variable(cf, &mut name, flags as ngx_uint_t) };
        if v.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        // SAFETY: ngx_http_add_variable returned a valid variable slot.
        unsafe {
            (*v).get_handler = Some(get);
            (*v).data = data;
        }
    }
    NGX_OK as ngx_int_t
}

/// # Safety
/// `r` and `v` must be the live request and value slot nginx passed to a getter.
unsafe fn set_value(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    value: Option<&[u8]>,
) -> ngx_int_t {
    // SAFETY: per this function's contract.
    unsafe {
        let Some(value) = value else {
            (*v).set_not_found(1);
            return NGX_OK as ngx_int_t;
        };
        let Some(s) = pool_str(r, value) else {
            return NGX_ERROR as ngx_int_t;
        };
        (*v).data = s.data;
        (*v).set_len(s.len as u32);
        (*v).set_valid(1);
        (*v).set_no_cacheable(1);
        (*v).set_not_found(0);
        NGX_OK as ngx_int_t
    }
}

/// The session of this request, or of its main request (variables are often evaluated in
/// subrequests and upstream contexts), with what it renders.
///
/// # Safety
/// `r` must be a live request.
unsafe fn verified<'a>(r: *mut ngx_http_request_t) -> Option<&'a Verified> {
    // SAFETY: per this function's contract; r->main is live as long as r.
    unsafe {
        if let Some(v) = ctx::get(r).and_then(|c| c.session.as_deref()) {
            return Some(v);
        }
        ctx::get((*r).main).and_then(|c| c.session.as_deref())
    }
}

unsafe extern "C" fn fetch_url(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _: usize,
) -> ngx_int_t {
    // SAFETY: called by nginx with a live request and value slot.
    unsafe {
        let url = ctx::get(r)
            .and_then(|c| c.fetch_url.as_ref())
            .map(|u| bytes(u).to_vec());
        set_value(r, v, url.as_deref())
    }
}

unsafe fn from_session(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    f: impl Fn(&Verified) -> Option<String>,
) -> ngx_int_t {
    // SAFETY: called from a getter with a live request and value slot.
    unsafe {
        let value = verified(r).and_then(f);
        set_value(r, v, value.as_deref().map(str::as_bytes))
    }
}

/// `$oidc_user`, `$oidc_email`, `$oidc_groups`, and the session's tokens as NGINX Plus names
/// them: `$oidc_access_token` (the current one, renewed by a refresh before the request goes
/// on) and `$oidc_id_token`. The module never logs the tokens.
unsafe extern "C" fn session_field(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    data: usize,
) -> ngx_int_t {
    let Some(&field) = FIELDS.get(data) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: called by nginx with a live request and value slot.
    unsafe {
        from_session(r, v, |s| match field {
            Field::User => s.user.clone(),
            Field::Email => s.session.claim("email"),
            Field::Groups => s.session.claim("groups"),
            Field::AccessToken => s.session.at.clone(),
            Field::IdToken => s.session.idt.clone(),
        })
    }
}

unsafe extern "C" fn claim(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    data: usize,
) -> ngx_int_t {
    // SAFETY: for prefix variables nginx passes the full variable name as `data`.
    unsafe {
        let full = bytes(&*(data as *const ngx_str_t));
        let name = std::str::from_utf8(&full[CLAIM_PREFIX.len().min(full.len())..])
            .unwrap_or("")
            .to_string();
        from_session(r, v, |s| s.session.claim(&name))
    }
}

/// Sessions keep the tokens that `$oidc_access_token` and `$oidc_id_token` render when some
/// part of the configuration uses them (`proxy_set_header`, `log_format`, `auth_request_set`
/// …): nginx has indexed every variable in use by the end of the http block.
///
/// # Safety
/// `cf` must be the http configuration being finished (postconfiguration).
pub unsafe fn keep_used_tokens(cf: *mut ngx_conf_t) {
    // SAFETY: postconfiguration runs with the http main confs in place; cmcf->variables is an
    // array of ngx_http_variable_t.
    unsafe {
        let (Some(cmcf), Some(main)) =
            (NgxHttpCoreModule::main_conf(&*cf), Module::main_conf(&*cf))
        else {
            return;
        };
        let used = cmcf.variables.as_slice::<ngx_http_variable_t>();
        let is_used = |name: &str| used.iter().any(|v| bytes(&v.name) == name.as_bytes());
        let (at, idt) = (is_used(ACCESS_TOKEN), is_used(ID_TOKEN));
        for p in &main.providers {
            if at {
                p.keep_access_token.set(true);
            }
            if idt {
                p.keep_id_token.set(true);
            }
        }
    }
}
