//! Rate and connection limits. The token bucket is given the time; it never
//! reads a clock, so its tests step through time without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A token bucket: holds up to `burst` tokens, refills at `rate` per second,
/// and every message takes one.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    /// Tokens, in millionths, so refills of a fraction of a token add up.
    micro_tokens: u64,
    burst_micro: u64,
    rate_per_sec: u64,
    last: Instant,
}

const MICRO: u64 = 1_000_000;

impl TokenBucket {
    /// A full bucket. A `rate_per_sec` of 0 never limits.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        let burst_micro = u64::from(burst.max(1)) * MICRO;
        TokenBucket {
            micro_tokens: burst_micro,
            burst_micro,
            rate_per_sec: u64::from(rate_per_sec),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        if self.rate_per_sec == 0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last);
        // Whole microseconds times tokens per second is millionths of tokens.
        let refill = micros(elapsed).saturating_mul(self.rate_per_sec);
        self.micro_tokens = self.micro_tokens.saturating_add(refill).min(self.burst_micro);
        self.last = self.last.max(now);
        if self.micro_tokens >= MICRO {
            self.micro_tokens -= MICRO;
            true
        } else {
            false
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Caps on open connections, in all and per address. (A count under a
/// `std::sync::Mutex`: held for a hash-map update, never across an await,
/// so a lock is simpler and cheaper than a task to own it.)
#[derive(Debug)]
pub struct ConnectionLimiter {
    max_total: usize,
    max_per_address: usize,
    /// Places past `max_total` only for an address that holds none, so
    /// that a flood from many addresses filling every place still leaves
    /// room for someone new (a health check, a person opening the page):
    /// taking them all needs this many more addresses, one connection each.
    newcomers: usize,
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// Why the limiter refused a connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum LimitExceeded {
    /// The server holds its maximum of connections.
    ServerFull,
    /// This address (or IPv6 /64) holds its maximum.
    AddressFull,
}

/// One open connection's place; given back when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    limiter: Arc<ConnectionLimiter>,
    address: IpAddr,
}

impl ConnectionLimiter {
    /// A limiter; 0 means no limit.
    pub fn new(max_total: usize, max_per_address: usize) -> Arc<Self> {
        Self::with_newcomers(max_total, max_per_address, 0)
    }

    /// A limiter that keeps `newcomers` places past `max_total` for
    /// addresses holding no connection.
    pub fn with_newcomers(max_total: usize, max_per_address: usize, newcomers: usize) -> Arc<Self> {
        Arc::new(ConnectionLimiter { max_total, max_per_address, newcomers, state: Mutex::default() })
    }

    /// Takes a place for a connection from `ip`, if there is one.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, LimitExceeded> {
        let address = address_key(ip);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if self.max_total > 0 && state.total >= self.max_total {
            let holds_none = !state.per_address.contains_key(&address);
            if !holds_none || state.total >= self.max_total + self.newcomers {
                return Err(LimitExceeded::ServerFull);
            }
        }
        let count = state.per_address.entry(address).or_insert(0);
        if self.max_per_address > 0 && *count >= self.max_per_address {
            return Err(LimitExceeded::AddressFull);
        }
        *count += 1;
        state.total += 1;
        Ok(ConnectionPermit { limiter: self.clone(), address })
    }

    /// Connections holding a place now.
    pub fn open(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).total
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut state = self.limiter.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.total = state.total.saturating_sub(1);
        if let Some(count) = state.per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                // Addresses come and go; the map only holds those with
                // connections open, so it cannot grow without bound.
                state.per_address.remove(&self.address);
            }
        }
    }
}

/// The unit a per-address limit counts: an IPv4 address, or an IPv6 /64
/// (one customer's network; a single host often has many addresses in it).
/// Bytes held in a queue that producers fill and one consumer empties: a
/// producer takes before it queues, the consumer gives back what it took
/// off. Bounds a queue of packets by bytes, not only by count (8192
/// datagrams of 64 KiB would be half a gigabyte). One item always fits in
/// an empty queue, however big, so nothing is too big to ever pass.
#[derive(Clone, Debug)]
pub(crate) struct ByteBudget {
    held: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

impl ByteBudget {
    /// A budget of `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        ByteBudget { held: Arc::default(), max }
    }

    /// Takes `len` bytes if they fit.
    pub(crate) fn try_take(&self, len: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let mut held = self.held.load(Relaxed);
        loop {
            if held != 0 && held.saturating_add(len) > self.max {
                return false;
            }
            match self.held.compare_exchange_weak(held, held + len, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }

    /// Gives back `len` bytes taken earlier.
    pub(crate) fn give(&self, len: usize) {
        self.held.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes `len` bytes whether they fit or not (what the holder is
    /// allowed beyond the budget; see `queue::FLOOR`).
    pub(crate) fn take(&self, len: usize) {
        self.held.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    }

    /// Bytes held now.
    pub(crate) fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn address_key(ip: IpAddr) -> IpAddr {
    turn::policy::client_key(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 10, finding 10: the TURN inbox and TCP queues were bounded by
    /// count only. A byte budget refuses what does not fit, lets one item
    /// of any size into an empty queue, and takes back what was given.
    #[test]
    fn a_byte_budget_bounds_bytes_and_lets_one_big_item_through() {
        let budget = ByteBudget::new(100);
        assert!(budget.try_take(60));
        assert!(budget.try_take(40));
        assert!(!budget.try_take(1), "full");
        budget.give(60);
        assert!(budget.try_take(50));
        assert!(!budget.try_take(11));
        budget.give(40);
        budget.give(50);
        assert_eq!(budget.held(), 0);
        assert!(budget.try_take(65_535), "one big item in an empty queue");
        assert!(!budget.try_take(1));
        let other = budget.clone();
        other.give(65_535);
        assert_eq!(budget.held(), 0, "clones share one count");
    }

    #[test]
    fn connection_limits_count_per_address_and_in_all() {
        let limiter = ConnectionLimiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "2001:db8::1".parse().expect("ip");
        let b_same_64: IpAddr = "2001:db8::ffff:1".parse().expect("ip");
        let b_mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        let p1 = limiter.try_acquire(a).expect("first");
        let _p2 = limiter.try_acquire(b_mapped).expect("same host as a, second");
        assert_eq!(limiter.try_acquire(a).err(), Some(LimitExceeded::AddressFull));
        let _p3 = limiter.try_acquire(b).expect("another address");
        assert_eq!(limiter.try_acquire(b_same_64).err(), Some(LimitExceeded::ServerFull));
        drop(p1);
        assert_eq!(limiter.open(), 2);
        let _p4 = limiter.try_acquire(b_same_64).expect("a place came free");
        assert_eq!(limiter.try_acquire(b).err(), Some(LimitExceeded::ServerFull));
        let unlimited = ConnectionLimiter::new(0, 0);
        let permits: Vec<_> = (0..1000).map(|_| unlimited.try_acquire(a).expect("no limit")).collect();
        assert_eq!(unlimited.open(), 1000);
        drop(permits);
        assert_eq!(unlimited.open(), 0);
        assert!(unlimited.state.lock().expect("lock").per_address.is_empty());
    }

    #[test]
    fn past_the_cap_in_all_only_an_address_holding_nothing_gets_in() {
        let limiter = ConnectionLimiter::with_newcomers(3, 2, 1);
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        let held: Vec<_> = ["10.0.0.1", "10.0.0.1", "10.0.0.2"]
            .iter()
            .map(|a| limiter.try_acquire(ip(a)).expect("under the cap"))
            .collect();
        // Full: an address already holding one is refused...
        assert_eq!(limiter.try_acquire(ip("10.0.0.2")).err(), Some(LimitExceeded::ServerFull));
        // ...one holding none takes the newcomers' place...
        let newcomer = limiter.try_acquire(ip("10.0.0.3")).expect("a newcomer");
        assert_eq!(limiter.open(), 4);
        // ...and once those are taken, nobody else gets in.
        assert_eq!(limiter.try_acquire(ip("10.0.0.4")).err(), Some(LimitExceeded::ServerFull));
        drop(newcomer);
        let _again = limiter.try_acquire(ip("10.0.0.4")).expect("the newcomers' place came free");
        drop(held);
    }

    #[test]
    fn allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, 200, t0);
        let taken = (0..300).filter(|_| bucket.try_take(t0)).count();
        assert_eq!(taken, 200, "the burst");
        // 10 ms later exactly one more token has dripped in.
        let t1 = t0 + Duration::from_millis(10);
        assert!(bucket.try_take(t1));
        assert!(!bucket.try_take(t1));
        // One second of quiet refills 100, not more than the burst.
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!((0..300).filter(|_| bucket.try_take(t2)).count(), 100);
        let t3 = t2 + Duration::from_secs(3600);
        assert_eq!((0..300).filter(|_| bucket.try_take(t3)).count(), 200);
    }

    #[test]
    fn fractions_of_a_token_add_up() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3, 5, t0);
        assert_eq!((0..10).filter(|_| bucket.try_take(t0)).count(), 5);
        let mut t = t0;
        let mut taken = 0;
        for _ in 0..1000 {
            t += Duration::from_millis(1);
            taken += usize::from(bucket.try_take(t));
        }
        assert_eq!(taken, 3);
    }

    #[test]
    fn zero_rate_never_limits_and_time_going_back_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut off = TokenBucket::new(0, 1, t0);
        assert!((0..10_000).all(|_| off.try_take(t0)));
        let mut bucket = TokenBucket::new(10, 1, t0);
        assert!(bucket.try_take(t0));
        assert!(!bucket.try_take(t0 - Duration::from_secs(5)));
    }
}
