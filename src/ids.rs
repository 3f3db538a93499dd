//! Ids: every id the server makes (chats, messages, events, conversations, worker ids, the worker
//! token) comes from here, so each kind has one length and alphabet. The child worker makes its
//! own (it depends on nothing of the server's).

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// The URL-safe alphabet of nanoid, in byte order, so that ids sort like the numbers they encode.
const ORDERED: &[u8; 64] = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz";

/// Characters of a record id that encode its creation time (42 bits of milliseconds: until 2109).
const TIME_CHARS: usize = 7;
/// Length of a record id.
const ID_LEN: usize = 21;

/// A new 21-character URL-safe id for a record in the store: 7 characters of the creation time
/// in milliseconds, then 14 random ones (84 bits from the kernel's generator).
///
/// Ids made later sort after earlier ones (to the millisecond), so a unique index on them
/// grows at its right edge: an insert rewrites the index's last page instead of a random one,
/// which keeps the pages a commit writes to the WAL few (with random ids every insert of a
/// message or event rewrote a different leaf page of each id index). The time an id shows is
/// the record's `createdAt`, which its resource shows anyway. Ids are never secrets
/// ([`secret`] is); 84 random bits still make them unguessable.
pub fn new_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut id = [0u8; ID_LEN];
    encode_time(ms, &mut id[..TIME_CHARS]);
    random_bytes(&mut id[TIME_CHARS..]);
    for c in &mut id[TIME_CHARS..] {
        *c = ORDERED[(*c & 63) as usize];
    }
    id.iter().map(|&b| b as char).collect()
}

/// Writes `ms` into `out` (most significant first), six bits per character of [`ORDERED`].
fn encode_time(ms: u64, out: &mut [u8]) {
    let n = out.len();
    for (i, c) in out.iter_mut().enumerate() {
        *c = ORDERED[((ms >> (6 * (n - 1 - i))) & 63) as usize];
    }
}

/// Fills `out` from a per-thread buffer of the kernel's random bytes, refilled by one
/// `getrandom` call per few dozen ids (nanoid seeds a new generator from the kernel per id).
fn random_bytes(out: &mut [u8]) {
    const BUF: usize = 1024;
    thread_local! {
        static POOL: RefCell<(usize, [u8; BUF])> = const { RefCell::new((BUF, [0; BUF])) };
    }
    POOL.with(|pool| {
        let (used, buf) = &mut *pool.borrow_mut();
        if *used + out.len() > BUF {
            if getrandom::getrandom(buf).is_err() {
                // The kernel's generator does not fail once the system is up; if it ever
                // did, fall back to nanoid's own seeding rather than hand out a weak id.
                buf.copy_from_slice(&nanoid::rngs::default(BUF));
            }
            *used = 0;
        }
        out.copy_from_slice(&buf[*used..*used + out.len()]);
        // Used bytes are not kept around for a later reader of this thread's memory.
        buf[*used..*used + out.len()].fill(0);
        *used += out.len();
    });
}

/// A new random 12-character id: a worker process (`AGENTD_WORKER_ID`), short enough for logs.
pub fn worker_id() -> String {
    nanoid::nanoid!(12)
}

/// A new random 32-character secret (about 190 bits), such as the worker token.
pub fn secret() -> String {
    nanoid::nanoid!(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_url_safe_unique_and_sort_by_creation() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let many: Vec<String> = (0..5000).map(|_| new_id()).collect();
        assert_eq!(a.len(), ID_LEN);
        assert!(a.bytes().all(|b| ORDERED.contains(&b)), "{a}");
        assert!(many.iter().all(|id| id.len() == ID_LEN && *id > a));
        let distinct: std::collections::HashSet<&String> = many.iter().collect();
        assert_eq!(distinct.len(), many.len());
        // The random part uses the whole alphabet.
        let seen: std::collections::HashSet<u8> = many
            .iter()
            .flat_map(|id| id.bytes().skip(TIME_CHARS))
            .collect();
        assert_eq!(seen.len(), 64);
    }

    #[test]
    fn the_time_prefix_orders_like_the_clock() {
        let encode = |ms: u64| {
            let mut out = [0u8; TIME_CHARS];
            encode_time(ms, &mut out);
            out
        };
        let times = [
            0u64,
            1,
            63,
            64,
            1_763_729_492_295,
            1_763_729_492_296,
            (1 << 42) - 1,
        ];
        for w in times.windows(2) {
            assert!(encode(w[0]) < encode(w[1]), "{} vs {}", w[0], w[1]);
        }
        assert!(ORDERED.windows(2).all(|w| w[0] < w[1]));
    }
}
