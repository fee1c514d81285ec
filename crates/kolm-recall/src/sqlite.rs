//! Opens sqlite connections with the sqlite-vec extension registered.
//!
//! sqlite-vec ships as a C library whose entry point must be registered with
//! `sqlite3_auto_extension`. That FFI call is the only `unsafe` in kolm-recall:
//! there is no safe API for it in rusqlite.

use std::path::Path;
use std::sync::Once;

use rusqlite::{Connection, OpenFlags};

use crate::error::{RecallError, Result};

static REGISTER: Once = Once::new();

/// Registers sqlite-vec for every connection opened after this call.
#[allow(unsafe_code)]
fn register_vec() {
    REGISTER.call_once(|| {
        type Init = unsafe extern "C" fn(
            *mut rusqlite::ffi::sqlite3,
            *mut *mut std::os::raw::c_char,
            *const rusqlite::ffi::sqlite3_api_routines,
        ) -> std::os::raw::c_int;
        // SAFETY: `sqlite3_vec_init` is sqlite-vec's extension entry point,
        // declared by the crate without arguments; its real C signature is
        // `Init`, which is what `sqlite3_auto_extension` expects. Registration
        // happens once, before any connection uses it.
        unsafe {
            let init: Init =
                std::mem::transmute::<*const (), Init>(sqlite_vec::sqlite3_vec_init as *const ());
            rusqlite::ffi::sqlite3_auto_extension(Some(init));
        }
    });
}

/// Opens (or creates) the index at `path` read-write.
pub(crate) fn open_rw(path: &Path) -> Result<Connection> {
    register_vec();
    let conn = Connection::open(path).map_err(RecallError::sql(path))?;
    conn.execute_batch("PRAGMA journal_mode=DELETE; PRAGMA synchronous=NORMAL;")
        .map_err(RecallError::sql(path))?;
    Ok(conn)
}

/// Opens the index at `path` read-only.
pub(crate) fn open_ro(path: &Path) -> Result<Connection> {
    register_vec();
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(RecallError::sql(path))
}
