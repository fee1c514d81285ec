//! What is resident and what may go: the scheduler's bookkeeping as plain
//! data, with no engine, store or clock of its own, so every rule is unit
//! tested here.
//!
//! - A model is attached to one base (by digest); a base counts the models
//!   attached and goes with its last one, unless the caller keeps it (it is
//!   about to attach another).
//! - A model in use (a lease is out) or pinned is never evicted nor expired.
//! - [`Residency::plan_room`] chooses victims, least recently used first,
//!   until `need` bytes fit in a [`Room`]; when nothing more can go it says
//!   whether waiting could help ([`Shortfall::busy`]: models in use hold
//!   enough) or not (the request is too large for the machine).
//! - Keep-alive: an idle unpinned model expires `keep_alive` after its last
//!   request ended; `Forever` never does.

use std::collections::HashMap;
use std::time::Instant;

use kolm_proto::KeepAlive;

/// One resident model and how it is used.
#[derive(Debug)]
pub(crate) struct Resident<M> {
    pub model: M,
    /// Digest of the base it is attached to.
    pub base: String,
    /// Memory it holds beyond its base (KV cache, embedder).
    pub own_bytes: u64,
    pub pinned: bool,
    pub keep_alive: KeepAlive,
    pub last_used: Instant,
    /// Leases out.
    pub in_use: usize,
    /// Requests it finished.
    pub served: u64,
}

impl<M> Resident<M> {
    /// When it unloads if nothing uses it again; `None`: never.
    pub fn expires_at(&self) -> Option<Instant> {
        if self.pinned || self.in_use > 0 {
            return None;
        }
        match self.keep_alive {
            KeepAlive::Forever => None,
            KeepAlive::Duration(d) => Some(self.last_used + d),
        }
    }

    fn evictable(&self) -> bool {
        self.in_use == 0 && !self.pinned
    }

    /// In use and not pinned: its memory comes back when its requests end.
    fn busy(&self) -> bool {
        self.in_use > 0 && !self.pinned
    }
}

/// One resident base.
#[derive(Debug)]
pub(crate) struct ResidentBase<B> {
    pub base: B,
    pub weight_bytes: u64,
    /// Models attached.
    pub refs: usize,
}

/// The memory a load may use, measured now.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Room {
    /// The configured cap on everything kolmd holds, if any.
    pub limit: Option<u64>,
    /// Free RAM.
    pub free_ram: u64,
    /// RAM always left free.
    pub reserve: u64,
    /// Free VRAM when the load goes to a GPU (`None`: not on a GPU, or
    /// unknown).
    pub free_vram: Option<u64>,
}

/// Why `need` bytes cannot fit even after every possible eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shortfall {
    /// Models in use hold enough that it would fit once they are idle.
    pub busy: bool,
    /// Bytes that would be free after the planned evictions.
    pub available: u64,
}

/// The residents: models by `name:version` and bases by digest.
#[derive(Debug)]
pub(crate) struct Residency<M, B> {
    models: HashMap<String, Resident<M>>,
    bases: HashMap<String, ResidentBase<B>>,
}

impl<M, B> Default for Residency<M, B> {
    fn default() -> Self {
        Residency {
            models: HashMap::new(),
            bases: HashMap::new(),
        }
    }
}

impl<M, B> Residency<M, B> {
    /// Bytes held: every base's weights once, plus every model's own.
    pub fn used_bytes(&self) -> u64 {
        self.bases.values().map(|b| b.weight_bytes).sum::<u64>()
            + self.models.values().map(|m| m.own_bytes).sum::<u64>()
    }

    pub fn models(&self) -> impl Iterator<Item = (&String, &Resident<M>)> {
        self.models.iter()
    }

    #[cfg(test)]
    pub fn model(&self, key: &str) -> Option<&Resident<M>> {
        self.models.get(key)
    }

    pub fn model_mut(&mut self, key: &str) -> Option<&mut Resident<M>> {
        self.models.get_mut(key)
    }

    pub fn bases(&self) -> impl Iterator<Item = (&String, &ResidentBase<B>)> {
        self.bases.iter()
    }

    pub fn base(&self, digest: &str) -> Option<&ResidentBase<B>> {
        self.bases.get(digest)
    }

    /// Records a base just loaded, with no model attached yet.
    pub fn add_base(&mut self, digest: String, base: B, weight_bytes: u64) {
        self.bases.insert(
            digest,
            ResidentBase {
                base,
                weight_bytes,
                refs: 0,
            },
        );
    }

    /// Drops a base no model is attached to (a load that failed after
    /// loading it). Returns whether it went.
    pub fn drop_unused_base(&mut self, digest: &str) -> bool {
        if self.bases.get(digest).is_some_and(|b| b.refs == 0) {
            self.bases.remove(digest);
            return true;
        }
        false
    }

    /// Admits a model attached to the resident base `base`, in use by the
    /// caller's lease. `None` (and nothing changes) when the base is gone.
    pub fn admit(
        &mut self,
        key: String,
        model: M,
        base: &str,
        own_bytes: u64,
        keep_alive: KeepAlive,
        now: Instant,
    ) -> Option<&Resident<M>> {
        self.bases.get_mut(base)?.refs += 1;
        let resident = Resident {
            model,
            base: base.to_owned(),
            own_bytes,
            pinned: false,
            keep_alive,
            last_used: now,
            in_use: 1,
            served: 0,
        };
        if let Some(old) = self.models.insert(key.clone(), resident) {
            // Replacing a model releases its hold on its base.
            self.unref_base(&old.base, None);
        }
        self.models.get(&key)
    }

    /// Takes a lease on a resident model and sets its keep-alive.
    pub fn lease(&mut self, key: &str, keep_alive: KeepAlive) -> Option<&Resident<M>> {
        let e = self.models.get_mut(key)?;
        e.in_use += 1;
        e.keep_alive = keep_alive;
        Some(e)
    }

    /// Ends a lease on `key` (if `is_it` still accepts the resident model:
    /// a model unloaded and loaded again is another one). A model that
    /// becomes idle with keep-alive 0 and no pin is removed; returns
    /// whether it was.
    pub fn release(&mut self, key: &str, now: Instant, is_it: impl Fn(&M) -> bool) -> bool {
        let Some(e) = self.models.get_mut(key) else {
            return false;
        };
        if !is_it(&e.model) {
            return false;
        }
        e.in_use = e.in_use.saturating_sub(1);
        e.served += 1;
        e.last_used = now;
        let unload_now =
            e.in_use == 0 && !e.pinned && e.keep_alive == KeepAlive::UNLOAD_AFTER_REQUEST;
        if unload_now {
            self.remove(key, None);
        }
        unload_now
    }

    /// Removes a model and, with its last model, its base (unless it is
    /// `keep_base`).
    pub fn remove(&mut self, key: &str, keep_base: Option<&str>) -> Option<Resident<M>> {
        let entry = self.models.remove(key)?;
        self.unref_base(&entry.base, keep_base);
        Some(entry)
    }

    fn unref_base(&mut self, digest: &str, keep_base: Option<&str>) {
        if let Some(base) = self.bases.get_mut(digest) {
            base.refs = base.refs.saturating_sub(1);
            if base.refs == 0 && keep_base != Some(digest) {
                self.bases.remove(digest);
            }
        }
    }

    /// Removes everything (shutdown).
    pub fn clear(&mut self) {
        self.models.clear();
        self.bases.clear();
    }

    /// The models whose keep-alive has passed at `now`, and the next
    /// deadline among the others.
    pub fn due(&self, now: Instant) -> (Vec<String>, Option<Instant>) {
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (key, e) in &self.models {
            match e.expires_at() {
                Some(t) if t <= now => due.push(key.clone()),
                Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
                None => {}
            }
        }
        due.sort();
        (due, next)
    }

    /// Which models to evict, in order, for `need` more bytes to fit in
    /// `room`, never unloading `keep_base`. Evicting frees a model's own
    /// bytes, and its base's weights when it is the base's last model.
    /// Nothing is removed here: the caller removes the victims.
    pub fn plan_room(
        &self,
        need: u64,
        room: Room,
        keep_base: Option<&str>,
    ) -> Result<Vec<String>, Shortfall> {
        let mut idle: Vec<(&String, &Resident<M>)> =
            self.models.iter().filter(|(_, e)| e.evictable()).collect();
        idle.sort_by(|a, b| a.1.last_used.cmp(&b.1.last_used).then(a.0.cmp(b.0)));
        let mut refs: HashMap<&str, usize> = self
            .bases
            .iter()
            .map(|(d, b)| (d.as_str(), b.refs))
            .collect();
        let mut used = self.used_bytes();
        let mut freed = 0u64;
        let mut victims = Vec::new();
        let mut idle = idle.into_iter();
        loop {
            let available = room_now(room, used, freed);
            if need <= available {
                return Ok(victims);
            }
            let Some((key, victim)) = idle.next() else {
                return Err(self.shortfall(need, available, keep_base));
            };
            let mut gain = victim.own_bytes;
            if let Some(r) = refs.get_mut(victim.base.as_str()) {
                *r = r.saturating_sub(1);
                if *r == 0 && keep_base != Some(victim.base.as_str()) {
                    gain += self.bases[&victim.base].weight_bytes;
                }
            }
            used = used.saturating_sub(gain);
            freed += gain;
            victims.push(key.clone());
        }
    }

    /// Whether models in use hold what `need` lacks, once every idle
    /// unpinned model is gone: their own bytes, and each base (but
    /// `keep_base`) that only they still use.
    fn shortfall(&self, need: u64, available: u64, keep_base: Option<&str>) -> Shortfall {
        let in_use = |e: &Resident<M>| e.in_use > 0 && !e.pinned;
        let mut held: u64 = self
            .models
            .values()
            .filter(|e| in_use(e))
            .map(|e| e.own_bytes)
            .sum();
        for (digest, base) in &self.bases {
            if keep_base == Some(digest.as_str()) {
                continue;
            }
            let mut remaining = self
                .models
                .values()
                .filter(|m| &m.base == digest && !m.evictable());
            let first = remaining.next();
            if first.is_some_and(Resident::busy) && remaining.all(Resident::busy) {
                held += base.weight_bytes;
            }
        }
        let busy = self.models.values().any(Resident::busy);
        Shortfall {
            busy: busy && need <= available.saturating_add(held),
            available,
        }
    }
}

/// Bytes free for a load with `used` held and `freed` released by planned
/// evictions: the least of the limit's headroom, free RAM over the reserve,
/// and free VRAM.
fn room_now(room: Room, used: u64, freed: u64) -> u64 {
    let limit = room.limit.map_or(u64::MAX, |l| l.saturating_sub(used));
    let ram = room
        .free_ram
        .saturating_add(freed)
        .saturating_sub(room.reserve);
    let vram = room.free_vram.map_or(u64::MAX, |v| v.saturating_add(freed));
    limit.min(ram).min(vram)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const GB: u64 = 1 << 30;

    /// A machine with lots of RAM, capped by `limit`.
    fn capped(limit: u64) -> Room {
        Room {
            limit: Some(limit),
            free_ram: 1 << 50,
            reserve: 0,
            free_vram: None,
        }
    }

    struct World {
        r: Residency<&'static str, ()>,
        t0: Instant,
    }

    impl World {
        fn new() -> World {
            World {
                r: Residency::default(),
                t0: Instant::now(),
            }
        }

        fn at(&self, s: u64) -> Instant {
            self.t0 + Duration::from_secs(s)
        }

        /// Loads `key` on `base` at second `s` and ends its request.
        fn idle(&mut self, key: &'static str, base: &str, own: u64, s: u64) {
            self.busy(key, base, own, s);
            let at = self.at(s);
            self.r.release(key, at, |_| true);
        }

        /// Loads `key` on `base` at second `s`, its request still running.
        fn busy(&mut self, key: &'static str, base: &str, own: u64, s: u64) {
            if self.r.base(base).is_none() {
                self.r.add_base(base.into(), (), GB);
            }
            let at = self.at(s);
            let ka = KeepAlive::Duration(Duration::from_secs(60));
            assert!(self.r.admit(key.into(), key, base, own, ka, at).is_some());
        }
    }

    #[test]
    fn evicts_least_recently_used_first_and_only_as_many_as_needed() {
        let mut w = World::new();
        w.idle("a:1", "ba", GB, 30);
        w.idle("b:1", "bb", GB, 10);
        w.idle("c:1", "bc", GB, 20);
        assert_eq!(w.r.used_bytes(), 6 * GB);
        // 2 GiB more under an 7 GiB cap: one model with its base (2 GiB).
        let plan = w.r.plan_room(2 * GB, capped(7 * GB), None).unwrap();
        assert_eq!(plan, vec!["b:1"]);
        // 4 GiB: the two oldest.
        let plan = w.r.plan_room(4 * GB, capped(7 * GB), None).unwrap();
        assert_eq!(plan, vec!["b:1", "c:1"]);
        // Fits already: nobody goes.
        assert!(w.r.plan_room(GB, capped(7 * GB), None).unwrap().is_empty());
    }

    #[test]
    fn a_shared_base_is_freed_only_with_its_last_model() {
        let mut w = World::new();
        w.idle("a:1", "shared", GB, 1);
        w.idle("b:1", "shared", GB, 2);
        assert_eq!(w.r.used_bytes(), 3 * GB);
        // Evicting a:1 frees 1 GiB (the base stays for b:1); 2 GiB needs both.
        assert_eq!(w.r.plan_room(GB, capped(3 * GB), None).unwrap(), ["a:1"]);
        assert_eq!(
            w.r.plan_room(2 * GB, capped(3 * GB), None).unwrap(),
            ["a:1", "b:1"]
        );
        // Kept for the caller, the base is never counted as freed.
        assert_eq!(
            w.r.plan_room(3 * GB, capped(3 * GB), Some("shared")),
            Err(Shortfall {
                busy: false,
                available: 2 * GB
            })
        );
        w.r.remove("a:1", None);
        assert_eq!(w.r.base("shared").map(|b| b.refs), Some(1));
        w.r.remove("b:1", None);
        assert!(
            w.r.base("shared").is_none(),
            "the last model takes its base"
        );
    }

    #[test]
    fn pinned_and_in_use_models_are_never_evicted() {
        let mut w = World::new();
        w.idle("pinned:1", "bp", GB, 1);
        w.r.model_mut("pinned:1").unwrap().pinned = true;
        w.busy("busy:1", "bb", GB, 2);
        w.idle("idle:1", "bi", GB, 3);
        let plan = w.r.plan_room(2 * GB, capped(6 * GB), None).unwrap();
        assert_eq!(plan, ["idle:1"]);
        let err = w.r.plan_room(3 * GB, capped(6 * GB), None).unwrap_err();
        assert_eq!(
            err,
            Shortfall {
                busy: true,
                available: 2 * GB
            },
            "the busy model holds 2 GiB: it fits once that request ends"
        );
    }

    #[test]
    fn busy_when_waiting_helps_too_large_when_it_never_can() {
        let mut w = World::new();
        w.busy("busy:1", "bb", GB, 1);
        // 2 GiB under a 3 GiB cap: 1 GiB free now, 3 GiB once busy:1 ends.
        let e = w.r.plan_room(2 * GB, capped(3 * GB), None).unwrap_err();
        assert!(e.busy);
        assert_eq!(e.available, GB);
        // 4 GiB never fits under 3 GiB.
        let e = w.r.plan_room(4 * GB, capped(3 * GB), None).unwrap_err();
        assert!(!e.busy);
        // A pinned model's memory never comes back: not busy either.
        let mut w = World::new();
        w.idle("pinned:1", "bp", GB, 1);
        w.r.model_mut("pinned:1").unwrap().pinned = true;
        let e = w.r.plan_room(2 * GB, capped(3 * GB), None).unwrap_err();
        assert!(!e.busy);
    }

    #[test]
    fn room_is_the_least_of_limit_ram_over_reserve_and_vram() {
        let mut w = World::new();
        w.idle("a:1", "ba", GB, 1);
        let room = |limit, free_ram, reserve, free_vram| Room {
            limit,
            free_ram,
            reserve,
            free_vram,
        };
        // RAM: 3 GiB free, 1 reserved: 2 fit, 3 need a:1 (frees 2 GiB).
        assert!(w
            .r
            .plan_room(2 * GB, room(None, 3 * GB, GB, None), None)
            .unwrap()
            .is_empty());
        assert_eq!(
            w.r.plan_room(3 * GB, room(None, 3 * GB, GB, None), None)
                .unwrap(),
            ["a:1"]
        );
        // VRAM: 1 GiB free: 2 GiB needs a:1 gone.
        assert_eq!(
            w.r.plan_room(2 * GB, room(None, 1 << 50, 0, Some(GB)), None)
                .unwrap(),
            ["a:1"]
        );
        assert_eq!(
            w.r.plan_room(4 * GB, room(None, 1 << 50, 0, Some(GB)), None),
            Err(Shortfall {
                busy: false,
                available: 3 * GB
            })
        );
    }

    #[test]
    fn keep_alive_expires_idle_unpinned_models_only() {
        let mut w = World::new();
        w.idle("old:1", "b", GB, 0); // expires at 60
        w.idle("new:1", "b", GB, 30); // expires at 90
        w.idle("pinned:1", "b", GB, 0);
        w.r.model_mut("pinned:1").unwrap().pinned = true;
        w.busy("busy:1", "b", GB, 0);
        w.r.model_mut("busy:1").unwrap().keep_alive = KeepAlive::UNLOAD_AFTER_REQUEST;
        let (due, next) = w.r.due(w.at(59));
        assert!(due.is_empty());
        assert_eq!(next, Some(w.at(60)));
        let (due, next) = w.r.due(w.at(60));
        assert_eq!(due, ["old:1"]);
        assert_eq!(next, Some(w.at(90)));
        w.r.model_mut("new:1").unwrap().keep_alive = KeepAlive::Forever;
        let (due, next) = w.r.due(w.at(1000));
        assert_eq!(due, ["old:1"], "forever, pinned and in use never expire");
        assert_eq!(next, None);
    }

    #[test]
    fn keep_alive_zero_unloads_when_the_last_request_ends() {
        let mut w = World::new();
        w.busy("a:1", "b", GB, 0);
        w.r.lease("a:1", KeepAlive::UNLOAD_AFTER_REQUEST).unwrap();
        assert_eq!(w.r.model("a:1").unwrap().in_use, 2);
        assert!(
            !w.r.release("a:1", w.at(1), |_| true),
            "one lease still out"
        );
        assert!(w.r.release("a:1", w.at(2), |_| true));
        assert!(w.r.model("a:1").is_none());
        assert!(w.r.base("b").is_none());
        assert_eq!(w.r.used_bytes(), 0);
    }

    #[test]
    fn a_lease_on_a_replaced_model_does_not_touch_the_new_one() {
        let mut w = World::new();
        w.busy("a:1", "b", GB, 0);
        w.r.remove("a:1", None);
        w.busy("a:1", "b", GB, 5);
        // The old lease ends: `is_it` says it is not this model.
        assert!(!w.r.release("a:1", w.at(6), |_| false));
        let e = w.r.model("a:1").unwrap();
        assert_eq!((e.in_use, e.served), (1, 0));
    }

    #[test]
    fn a_base_loaded_for_a_failed_attach_goes_again() {
        let mut w = World::new();
        w.r.add_base("b".into(), (), GB);
        assert!(w.r.drop_unused_base("b"));
        w.busy("a:1", "b", GB, 0);
        assert!(!w.r.drop_unused_base("b"), "a:1 is attached");
        assert!(w
            .r
            .admit(
                "x:1".into(),
                "x:1",
                "gone",
                GB,
                KeepAlive::UNLOAD_AFTER_REQUEST,
                w.at(1)
            )
            .is_none());
        assert!(w.r.model("x:1").is_none(), "no base, no model");
    }
}
