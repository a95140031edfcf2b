//! The per-provider shared-memory zone holding [`crate::shared::Table`].

use core::ffi::c_void;
use core::mem::size_of;
use core::ptr::{self, addr_of};
use core::sync::atomic::AtomicU64;

use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_shmtx_lock, ngx_shmtx_unlock,
    ngx_slab_alloc, ngx_slab_pool_t, ngx_str_t, NGX_ERROR, NGX_LOG_EMERG, NGX_OK,
};
use ngx::http::HttpModule;
use ngx::ngx_log_error;

use super::http::bytes;
use crate::glue::Module;
use crate::metrics::Metrics;
use crate::shared::Table;

/// Room for the table plus the slab allocator's own pages.
const ZONE_SIZE: usize = 1024 * 1024;

/// Registers the zone `oidc_<provider>`; nginx creates (or, on reload, keeps) it later.
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn add(cf: *mut ngx_conf_t, provider: &str) -> Option<*mut ngx_shm_zone_t> {
    let name = format!("oidc_{provider}");
    // SAFETY: per this function's contract; the name is copied into the configuration pool.
    unsafe {
        let mut name = super::http::conf_str(cf, name.as_bytes())?;
        let tag = Module::module() as *const _ as *mut c_void;
        let zone = ngx_shared_memory_add(cf, &mut name, ZONE_SIZE, tag);
        if zone.is_null() {
            return None;
        }
        (*zone).init = Some(init);
        Some(zone)
    }
}

unsafe extern "C" fn init(zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    // SAFETY: nginx calls this once the zone is mapped; `old` is the previous cycle's table
    // when the zone survives a reload.
    unsafe {
        if !old.is_null() {
            (*zone).data = old;
            return NGX_OK as ngx_int_t;
        }
        let shpool = (*zone).shm.addr as *mut ngx_slab_pool_t;
        if (*zone).shm.exists != 0 {
            (*zone).data = (*shpool).data;
            return NGX_OK as ngx_int_t;
        }
        let table = ngx_slab_alloc(shpool, size_of::<Table>());
        if table.is_null() {
            let name: &ngx_str_t = &(*zone).shm.name;
            ngx_log_error!(
                NGX_LOG_EMERG,
                (*zone).shm.log,
                "oidc: shared zone \"{}\" is too small",
                String::from_utf8_lossy(bytes(name))
            );
            return NGX_ERROR as ngx_int_t;
        }
        // All-zero bytes are an empty table.
        ptr::write_bytes(table as *mut u8, 0, size_of::<Table>());
        (*shpool).data = table;
        (*zone).data = table;
    }
    NGX_OK as ngx_int_t
}

/// Runs `f` on the table under the zone's lock; `None` before the zone exists.
///
/// # Safety
/// `zone` must be a zone created by [`add`], in a running worker.
pub unsafe fn with_table<R>(
    zone: *mut ngx_shm_zone_t,
    f: impl FnOnce(&mut Table) -> R,
) -> Option<R> {
    // SAFETY: per this function's contract; the slab pool's mutex serialises all workers.
    unsafe {
        let table = (*zone).data as *mut Table;
        if table.is_null() {
            return None;
        }
        let shpool = (*zone).shm.addr as *mut ngx_slab_pool_t;
        ngx_shmtx_lock(&mut (*shpool).mutex);
        let r = f(&mut *table);
        ngx_shmtx_unlock(&mut (*shpool).mutex);
        Some(r)
    }
}

/// The provider's counters: atomics that every worker adds to without the zone's lock; `None`
/// before the zone exists (configuration time).
///
/// # Safety
/// `zone` must be a zone created by [`add`].
pub unsafe fn metrics<'a>(zone: *mut ngx_shm_zone_t) -> Option<&'a Metrics> {
    // SAFETY: per this function's contract; the table lives as long as the zone (across
    // reloads), and only atomics are reached through this shared reference: no `&mut Table`
    // of this process is alive at the same time (workers are single-threaded and never count
    // inside `with_table`).
    unsafe {
        let table = (*zone).data as *const Table;
        (!table.is_null()).then(|| &*addr_of!((*table).metrics))
    }
}

/// When a worker last had the provider's discovery document and JWKS (see
/// [`Table::documents_at`]); `None` before the zone exists.
///
/// # Safety
/// `zone` must be a zone created by [`add`].
pub unsafe fn documents_at<'a>(zone: *mut ngx_shm_zone_t) -> Option<&'a AtomicU64> {
    // SAFETY: as in `metrics`: an atomic field of the live table.
    unsafe {
        let table = (*zone).data as *const Table;
        (!table.is_null()).then(|| &*addr_of!((*table).documents_at))
    }
}
