//! etcd's Lock and Election services, and the etcdctl lock recipe, on real `concord`
//! processes.
//!
//! - `services_match_etcd_3_4`: one scripted session of raw Lock/Election calls (leases
//!   chosen and granted for the caller, waiters that give up, Observe through every kind
//!   of leader change, etcd's errors) runs against a real etcd 3.4 (`/usr/bin/etcd`,
//!   skipped with a note when missing) and against concord; the transcripts must match
//!   (ids and terms aside).
//! - Mutual exclusion under contention, through the Lock service and through `etcdctl
//!   lock`: every holder increments a counter with a write fenced by its token; the
//!   counter must end at exactly N × M and [`check_holds`] must see no two holders
//!   overlap. The same with faults: SIGKILL of the cluster leader and of a client's
//!   member, SIGKILL and SIGSTOP of an `etcdctl lock` holder (whose fenced write after
//!   SIGCONT must be refused).
//! - Election: one leader at a time as seen by the campaigners and by Observe, every
//!   leader observed in order, Resign handing over at once, a dead leader replaced
//!   within its TTL plus an election timeout, Proclaim by a former leader refused.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use etcd_client::{Client, Compare, CompareOp, LeaderKey, LockOptions, ProclaimOptions, ResignOptions, Txn, TxnOp};
use tonic::Code;

// ---------------------------------------------------------------------------------------
// The history checker.

/// One holder's hold of a lock, as the holder saw it: from the Lock reply to the Unlock
/// call, on this process's clock.
#[derive(Clone, Debug)]
struct Hold {
    holder: String,
    /// The lock key's create revision.
    token: i64,
    acquired: Instant,
    released: Instant,
}

/// Holds ordered by token must not overlap in time, and tokens must be distinct: a
/// holder is told it holds the lock only after every older holder released it.
fn check_holds(holds: &[Hold]) -> Result<(), String> {
    let mut holds = holds.to_vec();
    holds.sort_by_key(|hold| hold.token);
    for pair in holds.windows(2) {
        let (first, next) = (&pair[0], &pair[1]);
        if first.token == next.token {
            return Err(format!("{} and {} both hold token {}", first.holder, next.holder, first.token));
        }
        if next.acquired < first.released {
            return Err(format!(
                "{} (token {}) acquired {:?} before {} (token {}) released",
                next.holder,
                next.token,
                first.released - next.acquired,
                first.holder,
                first.token
            ));
        }
    }
    Ok(())
}

#[test]
fn the_checker_catches_overlaps_and_shared_tokens() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let hold =
        |holder: &str, token, from, to| Hold { holder: holder.into(), token, acquired: at(from), released: at(to) };
    assert!(check_holds(&[hold("a", 5, 0, 10), hold("b", 9, 10, 20), hold("c", 7, 11, 12)]).is_err());
    assert!(check_holds(&[hold("a", 5, 0, 10), hold("b", 5, 20, 30)]).is_err());
    assert!(check_holds(&[hold("a", 5, 0, 10), hold("b", 6, 10, 20), hold("c", 9, 25, 30)]).is_ok());
}

// ---------------------------------------------------------------------------------------
// A lock client that fails over between members, and its fenced counter.

/// Connections to several members; a failed call moves on to the next one (etcd-client's
/// own balancing keeps choosing a dead member for a while, which would test the client).
#[derive(Clone)]
struct Members {
    clients: Vec<Client>,
    current: usize,
}

impl Members {
    async fn connect(cluster: &Cluster, members: &[usize]) -> Members {
        let mut clients = Vec::new();
        for &i in members {
            clients.push(cluster.client(i).await);
        }
        Members { clients, current: 0 }
    }

    fn client(&mut self) -> &mut Client {
        &mut self.clients[self.current]
    }

    fn fail_over(&mut self, who: &str, error: impl std::fmt::Display) {
        eprintln!("{who}: moving to the next member after: {error}");
        self.current = (self.current + 1) % self.clients.len();
    }
}

/// Increments `<prefix>/counter` if `lock_key` still has create revision `token`, with
/// the record `<prefix>/history/<value>` = `<holder> <token>`. Compares the counter's
/// mod revision too, and before each retry looks for its own record: a call whose
/// outcome was lost (its member died) is never applied twice. Returns the value written,
/// or `None` if the fence refused the write.
async fn fenced_increment(
    members: &mut Members,
    prefix: &str,
    lock_key: &[u8],
    token: i64,
    holder: &str,
) -> Result<Option<i64>, String> {
    let counter = format!("{prefix}/counter");
    let mark = format!("{holder} {token}");
    for _ in 0..50 {
        let attempt = async {
            let read = members.client().get(counter.as_str(), None).await?;
            let (value, mod_revision) = read.kvs().first().map_or((0, 0), |kv| {
                (String::from_utf8_lossy(kv.value()).parse::<i64>().unwrap_or(-1), kv.mod_revision())
            });
            let record = |value: i64| format!("{prefix}/history/{value:08}");
            let last = members.client().get(record(value), None).await?;
            if last.kvs().first().is_some_and(|kv| kv.value() == mark.as_bytes()) {
                return Ok(Some(Some(value)));
            }
            let txn = Txn::new()
                .when([
                    Compare::create_revision(lock_key.to_vec(), CompareOp::Equal, token),
                    Compare::mod_revision(counter.as_str(), CompareOp::Equal, mod_revision),
                ])
                .and_then([
                    TxnOp::put(counter.as_str(), (value + 1).to_string(), None),
                    TxnOp::put(record(value + 1), mark.as_str(), None),
                ]);
            if members.client().txn(txn).await?.succeeded() {
                return Ok(Some(Some(value + 1)));
            }
            let lock = members.client().get(lock_key.to_vec(), None).await?;
            let holds = lock.kvs().first().is_some_and(|kv| kv.create_revision() == token);
            Ok::<_, etcd_client::Error>(if holds { None } else { Some(None) })
        };
        match attempt.await {
            Ok(Some(outcome)) => return Ok(outcome),
            // Still holding, the counter moved: our own write whose answer was lost.
            Ok(None) => continue,
            Err(error) => {
                members.fail_over(holder, error);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Err(format!("{holder}: no fenced write after 50 attempts"))
}

/// The counter's value and, in order, who wrote each value (`history/<value>`).
async fn counter_and_history(client: &mut Client, prefix: &str) -> (i64, Vec<String>) {
    let counter = client.get(format!("{prefix}/counter"), None).await.expect("read the counter");
    let value = counter.kvs().first().map_or(0, |kv| String::from_utf8_lossy(kv.value()).parse().expect("a number"));
    let history = client
        .get(format!("{prefix}/history/"), Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .expect("read the history");
    (value, values(&history))
}

// ---------------------------------------------------------------------------------------
// Contention through the Lock service.

/// Attempts of one call before a locker gives up (each may wait for a leader).
const CALL_ATTEMPTS: usize = 60;

/// A lock client: its own lease, kept alive in the background every `ttl / 3` through
/// whichever of its members answers.
struct Locker {
    name: String,
    members: Members,
    lease: i64,
    keep_alive: tokio::task::JoinHandle<()>,
}

impl Locker {
    async fn new(name: String, members: Members, ttl: i64) -> Locker {
        let mut members = members;
        let mut lease = None;
        for _ in 0..CALL_ATTEMPTS {
            match members.client().lease_grant(ttl, None).await {
                Ok(granted) => {
                    lease = Some(granted.id());
                    break;
                }
                Err(error) => members.fail_over(&name, error),
            }
        }
        let lease = lease.unwrap_or_else(|| panic!("{name}: no lease"));
        let keep_alive = tokio::spawn(keep_alive(members.clone(), lease, ttl));
        Locker { name, members, lease, keep_alive }
    }

    /// Locks `lock` (retrying through errors: the same lease finds its own key again),
    /// increments the fenced counter, unlocks. Returns the hold.
    async fn round(&mut self, lock: &str, prefix: &str) -> Result<Hold, String> {
        let options = LockOptions::new().with_lease(self.lease);
        let mut key = None;
        for _ in 0..CALL_ATTEMPTS {
            match self.members.client().lock(lock, Some(options.clone())).await {
                Ok(response) => {
                    key = Some(response.key().to_vec());
                    break;
                }
                Err(error) => self.members.fail_over(&self.name, error),
            }
        }
        let key = key.ok_or_else(|| format!("{}: no lock", self.name))?;
        let acquired = Instant::now();
        let token = self.token_of(&key).await?;
        let written = fenced_increment(&mut self.members, prefix, &key, token, &self.name).await?;
        if written.is_none() {
            return Err(format!("{}: lost the lock (token {token}) while holding it", self.name));
        }
        let released = Instant::now();
        for _ in 0..CALL_ATTEMPTS {
            match self.members.client().unlock(key.clone()).await {
                Ok(_) => return Ok(Hold { holder: self.name.clone(), token, acquired, released }),
                Err(error) => self.members.fail_over(&self.name, error),
            }
        }
        Err(format!("{}: unlock failed", self.name))
    }

    async fn token_of(&mut self, key: &[u8]) -> Result<i64, String> {
        for _ in 0..CALL_ATTEMPTS {
            match self.members.client().get(key.to_vec(), None).await {
                Ok(read) => {
                    return read
                        .kvs()
                        .first()
                        .map(|kv| kv.create_revision())
                        .ok_or_else(|| format!("{}: the lock key is gone right after Lock", self.name))
                }
                Err(error) => self.members.fail_over(&self.name, error),
            }
        }
        Err(format!("{}: could not read the lock key", self.name))
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        self.keep_alive.abort();
    }
}

/// Renews `lease` every `ttl / 3`, moving to the next member after an error; ends when
/// the lease is gone.
async fn keep_alive(mut members: Members, lease: i64, ttl: i64) {
    loop {
        match members.client().lease_keep_alive(lease).await {
            Ok((mut keeper, mut stream)) => {
                while keeper.keep_alive().await.is_ok() {
                    match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
                        Ok(Ok(Some(response))) if response.ttl() > 0 => {}
                        Ok(Ok(Some(_))) => return,
                        _ => break,
                    }
                    tokio::time::sleep(Duration::from_millis(ttl as u64 * 1000 / 3)).await;
                }
                members.fail_over("keep-alive", "the stream ended");
            }
            Err(error) => members.fail_over("keep-alive", error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `clients` lockers × `rounds` rounds on one lock, running in the background; client
/// `i` talks to `members_of(i)` and its lease has `ttl` seconds.
struct Contention {
    tasks: Vec<tokio::task::JoinHandle<Result<(), String>>>,
    holds: Arc<Mutex<Vec<Hold>>>,
}

impl Contention {
    async fn start(
        cluster: &Cluster,
        prefix: &str,
        (clients, rounds, ttl): (usize, usize, i64),
        members_of: impl Fn(usize) -> Vec<usize>,
    ) -> Contention {
        let holds = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..clients {
            let members = Members::connect(cluster, &members_of(i)).await;
            let (holds, prefix) = (holds.clone(), prefix.to_string());
            tasks.push(tokio::spawn(async move {
                let mut locker = Locker::new(format!("client-{i}"), members, ttl).await;
                for _ in 0..rounds {
                    let hold = locker.round(&format!("{prefix}/lock"), &prefix).await?;
                    holds.lock().unwrap().push(hold);
                }
                Ok(())
            }));
        }
        Contention { tasks, holds }
    }

    fn rounds_done(&self) -> usize {
        self.holds.lock().unwrap().len()
    }

    async fn wait_for_rounds(&self, rounds: usize) {
        within(Duration::from_secs(60), &format!("{rounds} rounds to complete"), async {
            while self.rounds_done() < rounds {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    async fn finish(self) -> Vec<Hold> {
        for task in self.tasks {
            within(Duration::from_secs(120), "a locker to finish", task).await.expect("locker task").expect("locker");
        }
        let holds = self.holds.lock().unwrap().clone();
        holds
    }
}

async fn assert_exact_count(cluster: &Cluster, prefix: &str, holds: &[Hold], expected: i64) {
    let mut client = cluster.client_for(&cluster.running()).await;
    let (value, history) = counter_and_history(&mut client, prefix).await;
    assert_eq!(value, expected, "the fenced counter; history: {history:?}");
    assert_eq!(history.len() as i64, expected, "one history record per increment");
    check_holds(holds).expect("no two holders overlap");
    // Tokens grow with the counter: the holder of a later token wrote a later value.
    let tokens: Vec<i64> = history.iter().map(|record| record.split(' ').nth(1).unwrap().parse().unwrap()).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens in counter order: {tokens:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_service_excludes_under_contention() {
    let cluster = Cluster::start(3).await;
    let (clients, rounds) = (8, 10);
    let holds = Contention::start(&cluster, "plain", (clients, rounds, 3), |i| vec![i % 3]).await.finish().await;
    assert_eq!(holds.len(), clients * rounds);
    assert_exact_count(&cluster, "plain", &holds, (clients * rounds) as i64).await;
}

/// SIGKILL of the leader, then of a follower two clients talk to, while 6 clients lock:
/// the clients retry through the other member they know, nobody overlaps, no increment
/// is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lock_service_excludes_through_member_kills() {
    let mut cluster = Cluster::start(3).await;
    let (clients, rounds) = (6, 30);
    // Leases outlive a leader change, so every lost lock here would be a bug.
    let contention = Contention::start(&cluster, "faults", (clients, rounds, 10), |i| vec![i % 3, (i + 1) % 3]).await;
    contention.wait_for_rounds(30).await;
    let leader = cluster.wait_for_leader().await;
    cluster.kill(leader);
    contention.wait_for_rounds(90).await;
    cluster.restart(leader);
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers(leader)[0];
    contention.wait_for_rounds(110).await;
    cluster.kill(follower);
    let holds = contention.finish().await;
    assert_eq!(holds.len(), clients * rounds);
    assert_exact_count(&cluster, "faults", &holds, (clients * rounds) as i64).await;
}

/// A waiter whose lease ends while it waits is told so once the lock is free, and is not
/// told it holds a lock whose key is gone (etcd 3.4 would grant it); likewise a campaign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_lease_ended_is_not_granted() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    let holder = client.lease_grant(30, None).await.expect("grant").id();
    let waiter = client.lease_grant(30, None).await.expect("grant").id();
    let held = client.lock("expiring", Some(LockOptions::new().with_lease(holder))).await.expect("lock");
    let mut waiting = client.clone();
    let waited =
        tokio::spawn(async move { waiting.lock("expiring", Some(LockOptions::new().with_lease(waiter))).await });
    let (first, _) = campaign(client.clone(), "expiring-election", "first", holder).await.expect("campaign");
    let campaigned = campaign_result(client.clone(), "expiring-election", "second", waiter);
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.lease_revoke(waiter).await.expect("revoke the waiter's lease");
    client.unlock(held.key().to_vec()).await.expect("unlock");
    client.resign(Some(ResignOptions::new().with_leader(first))).await.expect("resign");
    let result = within(Duration::from_secs(5), "the waiter's answer", waited).await.expect("task");
    assert_status(result, Code::Unknown, "mutex: session is expired");
    let result = within(Duration::from_secs(5), "the campaign's answer", campaigned).await.expect("task");
    assert_status(result, Code::Unknown, "election: session is expired");
}

/// Campaigns in the background; the call's result.
fn campaign_result(
    mut client: Client,
    name: &str,
    value: &str,
    lease: i64,
) -> tokio::task::JoinHandle<Result<etcd_client::CampaignResponse, etcd_client::Error>> {
    let (name, value) = (name.to_string(), value.to_string());
    tokio::spawn(async move { client.campaign(name, value, lease).await })
}

// ---------------------------------------------------------------------------------------
// The etcdctl recipe (`etcdctl lock`: KV, Lease and Watch; no Lock service).

const ETCDCTL: &str = "/usr/bin/etcdctl";

fn etcdctl_missing() -> bool {
    let missing = !std::path::Path::new(ETCDCTL).exists();
    if missing {
        eprintln!("SKIPPED: {ETCDCTL} is not installed");
    }
    missing
}

/// A script run by `etcdctl lock NAME`: reads its token (the lock key's create revision;
/// `ETCD_LOCK_REV` is only the revision when the lock was granted), says `holding`,
/// sleeps `$PAUSE` seconds, then increments `$P/counter` with a Txn fenced by the token
/// and records `$P/history/<value>`.
const FENCED_INCREMENT: &str = r#"set -eu
ctl() { etcdctl --endpoints="$E" --dial-timeout=2s --command-timeout=5s "$@"; }
token=$(ctl get "$ETCD_LOCK_KEY" -w fields | sed -n 's/^"CreateRevision" : //p')
echo "holding $token"
sleep "$PAUSE"
v=$(ctl get "$P/counter" --print-value-only); n=$(( ${v:-0} + 1 ))
printf 'c("%s") = "%s"\n\nput %s/counter %s\nput %s/history/%08d "%s %s"\n\n\n' \
  "$ETCD_LOCK_KEY" "$token" "$P" "$n" "$P" "$n" "$H" "$token" | ctl txn
"#;

/// An `etcdctl` process in its own process group, its output collected line by line.
struct Etcdctl {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Etcdctl {
    fn spawn(endpoints: &str, args: &[&str], env: &[(&str, String)]) -> Etcdctl {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(ETCDCTL);
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start etcdctl");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for output in [
            child.stdout.take().map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(output).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Etcdctl { child, lines }
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    async fn wait_for_output(&self, needle: &str, limit: Duration) {
        within(limit, &format!("etcdctl to print {needle:?}"), async {
            while !self.output().contains(needle) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Sends `signal` to the whole process group (etcdctl and the command it runs).
    fn signal(&self, signal: &str) {
        let group = format!("-{}", self.child.id());
        let sent = std::process::Command::new("kill").args([signal, "--", &group]).status().expect("run kill");
        assert!(sent.success(), "kill {signal} {group} failed");
    }

    async fn wait(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let status = within(limit, "etcdctl to exit", async {
            loop {
                if let Some(status) = self.child.try_wait().expect("poll etcdctl") {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        (status, self.output())
    }
}

impl Drop for Etcdctl {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal("-KILL");
            let _ = self.child.wait();
        }
    }
}

fn fenced_lock_args<'a>(name: &'a str, ttl: &'a str) -> Vec<&'a str> {
    vec!["lock", "--ttl", ttl, name, "--", "sh", "-c", FENCED_INCREMENT]
}

fn fenced_env(endpoints: &str, prefix: &str, holder: &str, pause: &str) -> Vec<(&'static str, String)> {
    vec![
        ("E", endpoints.to_string()),
        ("P", prefix.to_string()),
        ("H", holder.to_string()),
        ("PAUSE", pause.to_string()),
    ]
}

/// 4 processes × 5 rounds of `etcdctl lock NAME sh -c <fenced increment>`, each process
/// on another member: the counter ends at exactly 20, tokens in counter order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcdctl_lock_recipe_excludes_under_contention() {
    if etcdctl_missing() {
        return;
    }
    let cluster = Cluster::start(3).await;
    let (processes, rounds) = (4, 5);
    let mut tasks = Vec::new();
    for p in 0..processes {
        let endpoint = cluster.endpoint(p % 3);
        tasks.push(tokio::spawn(async move {
            for round in 0..rounds {
                let holder = format!("etcdctl-{p}-{round}");
                let env = fenced_env(&endpoint, "recipe", &holder, "0");
                let run = Etcdctl::spawn(&endpoint, &fenced_lock_args("recipe/lock", "5"), &env);
                let (status, output) = run.wait(Duration::from_secs(60)).await;
                assert!(status.success() && output.contains("SUCCESS"), "{holder}: {status} {output}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("an etcdctl loop");
    }
    let mut client = cluster.client(0).await;
    let (value, history) = counter_and_history(&mut client, "recipe").await;
    assert_eq!(value, (processes * rounds) as i64, "history: {history:?}");
    let tokens: Vec<i64> = history.iter().map(|record| record.split(' ').nth(1).unwrap().parse().unwrap()).collect();
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens in counter order: {tokens:?}");
}

/// A Lock through the service, waiting behind `etcdctl`'s holder; returns when it got
/// the lock.
fn lock_in_background(mut client: Client, name: &str, lease: i64) -> tokio::task::JoinHandle<(Instant, Vec<u8>)> {
    let name = name.to_string();
    tokio::spawn(async move {
        let response = client.lock(name, Some(LockOptions::new().with_lease(lease))).await.expect("the waiter's lock");
        (Instant::now(), response.key().to_vec())
    })
}

/// SIGKILL of an `etcdctl lock` holder: its lease (TTL 2 s) ends and the lock passes to
/// the waiter, not before most of the TTL and not long after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_etcdctl_holder_passes_the_lock_on() {
    if etcdctl_missing() {
        return;
    }
    let cluster = Cluster::start(3).await;
    let holder = Etcdctl::spawn(&cluster.endpoint(1), &["lock", "--ttl", "2", "killed/lock"], &[]);
    holder.wait_for_output("killed/lock/", Duration::from_secs(20)).await;
    let waiter = Locker::new("waiter".into(), Members::connect(&cluster, &[2]).await, 10).await;
    let got = lock_in_background(waiter.members.clients[0].clone(), "killed/lock", waiter.lease);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!got.is_finished(), "the waiter got the lock while etcdctl held it");
    let killed_at = Instant::now();
    holder.signal("-KILL");
    let (acquired, _) = within(Duration::from_secs(10), "the lock to pass on", got).await.expect("waiter task");
    let after = acquired - killed_at;
    // The holder renewed every TTL/3: its lease had at least 2/3 of the TTL left.
    assert!(after >= Duration::from_millis(1000), "passed on {after:?} after the kill: before the lease ended");
    assert!(after <= Duration::from_millis(2000) + 2 * ELECTION_TIMEOUT + Duration::from_millis(500), "{after:?}");
}

/// SIGSTOP of an `etcdctl lock` holder between reading its token and writing: its lease
/// ends, the waiter takes the lock and increments; after SIGCONT the former holder's
/// fenced write is refused, so the counter holds the waiter's increment only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holders_fenced_write_is_refused() {
    if etcdctl_missing() {
        return;
    }
    let cluster = Cluster::start(3).await;
    let endpoint = cluster.endpoint(0);
    let env = fenced_env(&endpoint, "paused", "paused-holder", "3");
    let holder = Etcdctl::spawn(&endpoint, &fenced_lock_args("paused/lock", "2"), &env);
    holder.wait_for_output("holding", Duration::from_secs(20)).await;
    holder.signal("-STOP");
    let mut waiter = Locker::new("waiter".into(), Members::connect(&cluster, &[1]).await, 10).await;
    let hold = within(Duration::from_secs(10), "the waiter's round", waiter.round("paused/lock", "paused"))
        .await
        .expect("the waiter locks and increments");
    holder.signal("-CONT");
    let (_, output) = holder.wait(Duration::from_secs(20)).await;
    assert!(output.contains("FAILURE"), "the paused holder's fenced Txn must fail: {output}");
    let (value, history) = counter_and_history(waiter.members.client(), "paused").await;
    assert_eq!((value, history), (1, vec![format!("waiter {}", hold.token)]));
}

/// `etcdctl lock` connected to one member that is then killed: etcdctl cannot renew, its
/// lease ends, the lock passes to a waiter on another member, and etcdctl fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_passes_on_when_the_holders_member_dies() {
    if etcdctl_missing() {
        return;
    }
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let member = cluster.followers(leader)[0];
    let holder = Etcdctl::spawn(&cluster.endpoint(member), &["lock", "--ttl", "2", "orphan/lock"], &[]);
    holder.wait_for_output("orphan/lock/", Duration::from_secs(20)).await;
    let waiter = Locker::new("waiter".into(), Members::connect(&cluster, &[leader]).await, 10).await;
    let got = lock_in_background(waiter.members.clients[0].clone(), "orphan/lock", waiter.lease);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!got.is_finished(), "the waiter got the lock while etcdctl held it");
    cluster.kill(member);
    within(Duration::from_secs(10), "the lock to pass on", got).await.expect("waiter task");
    let (status, output) = holder.wait(Duration::from_secs(30)).await;
    assert!(!status.success(), "etcdctl must fail once its session is lost: {output}");
}

// ---------------------------------------------------------------------------------------
// Election.

/// Every leader an Observe stream reported, with when it arrived.
fn observe_leaders(mut client: Client, name: &str) -> Arc<Mutex<Vec<(String, Instant)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (record, name) = (seen.clone(), name.to_string());
    tokio::spawn(async move {
        let mut stream = client.observe(name).await.expect("observe");
        while let Ok(Some(reply)) = stream.message().await {
            let value = reply.kv().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()).unwrap_or_default();
            record.lock().unwrap().push((value, Instant::now()));
        }
    });
    seen
}

/// Campaigns in the background; returns the leader key and when it was elected.
fn campaign(mut client: Client, name: &str, value: &str, lease: i64) -> tokio::task::JoinHandle<(LeaderKey, Instant)> {
    let (name, value) = (name.to_string(), value.to_string());
    tokio::spawn(async move {
        let response = client.campaign(name, value, lease).await.expect("campaign");
        (response.leader().expect("a leader key").clone(), Instant::now())
    })
}

/// Three candidates on three members: one leader at a time, in campaign order; Proclaim
/// seen by observers; Resign hands over at once; a leader whose keep-alives stop is
/// replaced within its TTL plus an election timeout or two; a former leader's Proclaim
/// is refused with etcd's error; Observe reports every leader and value in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn election_hands_over_in_order() {
    let cluster = Cluster::start(3).await;
    let ttl = 2;
    let mut a = Locker::new("a".into(), Members::connect(&cluster, &[0]).await, ttl).await;
    let b = Locker::new("b".into(), Members::connect(&cluster, &[1]).await, ttl).await;
    let c = Locker::new("c".into(), Members::connect(&cluster, &[2]).await, ttl).await;
    let (a_key, _) = campaign(a.members.clients[0].clone(), "svc", "a", a.lease).await.expect("a campaigns");
    let observed = observe_leaders(cluster.client(1).await, "svc");
    let b_won = campaign(b.members.clients[0].clone(), "svc", "b", b.lease);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c_won = campaign(c.members.clients[0].clone(), "svc", "c", c.lease);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b_won.is_finished() && !c_won.is_finished(), "b or c elected while a leads");
    let leader = a.members.client().leader("svc").await.expect("leader");
    assert_eq!(leader.kv().map(|kv| kv.value()), Some(&b"a"[..]));

    let with_a = || ProclaimOptions::new().with_leader(a_key.clone());
    a.members.client().proclaim("a2", Some(with_a())).await.expect("the leader proclaims");
    let resigned_at = Instant::now();
    a.members.client().resign(Some(ResignOptions::new().with_leader(a_key.clone()))).await.expect("resign");
    let (_, b_elected) = within(Duration::from_secs(5), "b to be elected", b_won).await.expect("b's campaign");
    assert!(b_elected - resigned_at < Duration::from_secs(1), "resign handed over in {:?}", b_elected - resigned_at);
    assert_status(a.members.client().proclaim("late", Some(with_a())).await, Code::Unknown, "election: not leader");

    // b dies: its keep-alives stop.
    let died_at = Instant::now();
    drop(b);
    let (_, c_elected) = within(Duration::from_secs(10), "c to be elected", c_won).await.expect("c's campaign");
    let takeover = c_elected - died_at;
    assert!(takeover >= Duration::from_millis(1000), "c elected {takeover:?} after b died: b's lease had time left");
    assert!(
        takeover <= Duration::from_secs(ttl as u64) + 2 * ELECTION_TIMEOUT + Duration::from_millis(500),
        "{takeover:?}"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen: Vec<String> = observed.lock().unwrap().iter().map(|(value, _)| value.clone()).collect();
    assert_eq!(seen, ["a", "a2", "b", "c"], "every leader and value, in order");
    drop((a, c));
}

// ---------------------------------------------------------------------------------------
// The services on the wire, compared with a real etcd 3.4.

mod wire {
    use super::*;
    use concord_api::etcdserverpb::{self as pb, kv_client::KvClient, lease_client::LeaseClient};
    use concord_api::mvccpb::KeyValue;
    use concord_api::v3electionpb::{self as epb, election_client::ElectionClient};
    use concord_api::v3lockpb::{self as lpb, lock_client::LockClient};
    use tonic::transport::Channel;

    const ETCD: &str = "/usr/bin/etcd";

    /// What one call answered, without what differs between two servers by nature.
    fn shown<T>(result: Result<tonic::Response<T>, tonic::Status>, show: impl FnOnce(T) -> String) -> String {
        match result {
            Ok(response) => show(response.into_inner()),
            Err(status) => format!("error {:?} {:?}", status.code(), status.message()),
        }
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn rev(header: Option<pb::ResponseHeader>) -> i64 {
        header.map_or(-1, |h| h.revision)
    }

    fn kv(kv: Option<KeyValue>) -> String {
        kv.map_or("none".into(), |kv| {
            format!(
                "{}={} create={} mod={} version={} lease={}",
                text(&kv.key),
                text(&kv.value),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.lease
            )
        })
    }

    fn leader_key(key: &Option<epb::LeaderKey>) -> String {
        key.as_ref().map_or("none".into(), |k| {
            format!("name={} key={} rev={} lease={}", text(&k.name), text(&k.key), k.rev, k.lease)
        })
    }

    /// Every Observe reply of a stream, as text, in a channel (etcd sends the stream's
    /// headers with its first reply, so the call itself is made in a task).
    fn observe(mut election: ElectionClient<Channel>, name: &[u8]) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let name = name.to_vec();
        tokio::spawn(async move {
            match election.observe(epb::LeaderRequest { name }).await {
                Err(status) => {
                    let _ = tx.send(format!("error {:?} {:?}", status.code(), status.message()));
                }
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    while let Ok(Some(reply)) = stream.message().await {
                        let _ = tx.send(format!("rev={} {}", rev(reply.header), kv(reply.kv)));
                    }
                }
            }
        });
        rx
    }

    async fn next_observed(observed: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
        match tokio::time::timeout(Duration::from_secs(5), observed.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => "stream ended".into(),
            Err(_) => "nothing within 5 s".into(),
        }
    }

    async fn quiet(observed: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
        match tokio::time::timeout(Duration::from_millis(400), observed.recv()).await {
            Ok(Some(line)) => format!("unexpected {line}"),
            Ok(None) => "stream ended".into(),
            Err(_) => "quiet".into(),
        }
    }

    /// The script: returns (step, what was answered) in order.
    async fn run_script(endpoint: &str) -> Vec<(&'static str, String)> {
        let endpoint = if endpoint.starts_with("http") { endpoint.to_string() } else { format!("http://{endpoint}") };
        let channel =
            tonic::transport::Endpoint::from_shared(endpoint).expect("endpoint").connect().await.expect("connect");
        let mut lock = LockClient::new(channel.clone());
        let mut election = ElectionClient::new(channel.clone());
        let mut lease = LeaseClient::new(channel.clone());
        let mut kv_client = KvClient::new(channel.clone());
        let mut steps = Vec::new();
        let grant = |ttl| pb::LeaseGrantRequest { ttl, id: 0 };
        let l1 = lease.lease_grant(grant(30)).await.expect("grant").into_inner().id;
        let l2 = lease.lease_grant(grant(30)).await.expect("grant").into_inner().id;
        let l3 = lease.lease_grant(grant(30)).await.expect("grant").into_inner().id;

        // Lock.
        let lock_request = |name: &[u8], lease| lpb::LockRequest { name: name.to_vec(), lease };
        let show_lock = |r: lpb::LockResponse| format!("rev={} key={}", rev(r.header), text(&r.key));
        let held = lock.lock(lock_request(b"L", l1)).await.expect("lock").into_inner();
        steps.push(("lock", show_lock(held.clone())));
        steps.push(("lock again, same lease", shown(lock.lock(lock_request(b"L", l1)).await, show_lock)));
        let gave_up = tokio::time::timeout(Duration::from_millis(500), lock.lock(lock_request(b"L", l2))).await;
        steps.push(("a waiter gives up", format!("{}", gave_up.is_err())));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let range = |key: &[u8]| pb::RangeRequest {
            key: key.to_vec(),
            range_end: concord_mvcc::prefix_end(key),
            ..Default::default()
        };
        let show_keys = |r: pb::RangeResponse| r.kvs.into_iter().map(|k| kv(Some(k))).collect::<Vec<_>>().join("; ");
        steps.push(("its key is gone", shown(kv_client.range(range(b"L/")).await, show_keys)));
        steps.push(("lock, lease 0", shown(lock.lock(lock_request(b"Z", 0)).await, show_lock)));
        let z = kv_client.range(range(b"Z/")).await.expect("range").into_inner().kvs;
        let granted = z.first().map_or(0, |kv| kv.lease);
        let ttl = lease.lease_time_to_live(pb::LeaseTimeToLiveRequest { id: granted, keys: true }).await;
        steps.push((
            "the lease granted for it",
            shown(ttl, |r| {
                format!("granted_ttl={} keys={:?}", r.granted_ttl, r.keys.iter().map(|k| text(k)).collect::<Vec<_>>())
            }),
        ));
        steps.push(("lock, unknown lease", shown(lock.lock(lock_request(b"U", 12345)).await, show_lock)));
        steps.push(("lock, empty name", shown(lock.lock(lock_request(b"", l3)).await, show_lock)));
        let unlock = |key: &[u8]| lpb::UnlockRequest { key: key.to_vec() };
        let show_unlock = |r: lpb::UnlockResponse| format!("rev={}", rev(r.header));
        steps.push(("unlock", shown(lock.unlock(unlock(&held.key)).await, show_unlock)));
        steps.push(("unlock again", shown(lock.unlock(unlock(&held.key)).await, show_unlock)));
        steps.push(("unlock, empty key", shown(lock.unlock(unlock(b"")).await, show_unlock)));

        // Election.
        let leader_request = |name: &[u8]| epb::LeaderRequest { name: name.to_vec() };
        let show_leader = |r: epb::LeaderResponse| format!("rev={} {}", rev(r.header), kv(r.kv));
        let show_campaign = |r: epb::CampaignResponse| format!("rev={} {}", rev(r.header), leader_key(&r.leader));
        let campaign = |lease, value: &[u8]| epb::CampaignRequest { name: b"E".to_vec(), lease, value: value.to_vec() };
        steps.push(("leader of an empty election", shown(election.leader(leader_request(b"E")).await, show_leader)));
        let mut observed = observe(election.clone(), b"E");
        steps.push(("observe with no leader", quiet(&mut observed).await));
        let a = election.campaign(campaign(l1, b"a1")).await.expect("campaign").into_inner();
        steps.push(("campaign a", show_campaign(a.clone())));
        steps.push(("observed", next_observed(&mut observed).await));
        let mut waiting = election.clone();
        let b = tokio::spawn(async move { waiting.campaign(campaign(l2, b"b1")).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let proclaim = |leader: &Option<epb::LeaderKey>, value: &[u8]| epb::ProclaimRequest {
            leader: leader.clone(),
            value: value.to_vec(),
        };
        let show_proclaim = |r: epb::ProclaimResponse| format!("rev={}", rev(r.header));
        steps.push(("proclaim a2", shown(election.proclaim(proclaim(&a.leader, b"a2")).await, show_proclaim)));
        steps.push(("observed", next_observed(&mut observed).await));
        steps.push(("proclaim a2 again", shown(election.proclaim(proclaim(&a.leader, b"a2")).await, show_proclaim)));
        steps.push(("observed", next_observed(&mut observed).await));
        steps.push(("leader", shown(election.leader(leader_request(b"E")).await, show_leader)));
        let mut stale = a.leader.clone();
        if let Some(key) = stale.as_mut() {
            key.rev += 1000;
        }
        steps.push(("proclaim, wrong rev", shown(election.proclaim(proclaim(&stale, b"x")).await, show_proclaim)));
        let show_resign = |r: epb::ResignResponse| format!("rev={}", rev(r.header));
        let resign = |leader: &Option<epb::LeaderKey>| epb::ResignRequest { leader: leader.clone() };
        steps.push(("resign, wrong rev", shown(election.resign(resign(&stale)).await, show_resign)));
        let mut foreign = a.leader.clone();
        if let Some(key) = foreign.as_mut() {
            key.lease = 999;
        }
        steps
            .push(("proclaim, unknown lease", shown(election.proclaim(proclaim(&foreign, b"x")).await, show_proclaim)));
        steps.push(("proclaim, no leader key", shown(election.proclaim(proclaim(&None, b"x")).await, show_proclaim)));
        steps.push(("resign, no leader key", shown(election.resign(resign(&None)).await, show_resign)));
        steps.push((
            "campaign again, another value",
            shown(election.campaign(campaign(l1, b"a3")).await, show_campaign),
        ));
        steps.push(("observed", next_observed(&mut observed).await));
        steps.push(("resign a", shown(election.resign(resign(&a.leader)).await, show_resign)));
        let b = b.await.expect("campaign task");
        steps.push(("b leads", shown(b, show_campaign)));
        steps.push(("observed", next_observed(&mut observed).await));
        steps.push(("resign a again", shown(election.resign(resign(&a.leader)).await, show_resign)));
        steps.push((
            "proclaim by a, no longer leader",
            shown(election.proclaim(proclaim(&a.leader, b"x")).await, show_proclaim),
        ));
        let mut late = observe(election.clone(), b"E");
        steps.push(("a later observer", next_observed(&mut late).await));
        lease.lease_revoke(pb::LeaseRevokeRequest { id: l2 }).await.expect("revoke");
        steps.push(("b's lease revoked: no leader", quiet(&mut observed).await));
        steps.push(("campaign, unknown lease", shown(election.campaign(campaign(4242, b"x")).await, show_campaign)));
        let c = election.campaign(campaign(l3, b"c1")).await;
        steps.push(("campaign c", shown(c, show_campaign)));
        steps.push(("observed", next_observed(&mut observed).await));
        steps.push(("the later observer", next_observed(&mut late).await));
        let gave_up = tokio::time::timeout(Duration::from_millis(500), election.campaign(campaign(l1, b"z"))).await;
        steps.push(("a campaign gives up", format!("{}", gave_up.is_err())));
        tokio::time::sleep(Duration::from_millis(300)).await;
        steps.push(("its key is gone", shown(kv_client.range(range(b"E/")).await, show_keys)));
        let d = election.campaign(epb::CampaignRequest { name: b"F".to_vec(), lease: 0, value: b"d".to_vec() }).await;
        steps.push(("campaign, lease 0", shown(d, show_campaign)));
        steps
    }

    /// Lease ids differ between servers: each becomes `L<n>` in order of appearance, in
    /// decimal (`lease=`) and in hex (in keys).
    fn with_named_leases(steps: Vec<(&'static str, String)>) -> Vec<(&'static str, String)> {
        let mut ids: Vec<i64> = Vec::new();
        for (_, answer) in &steps {
            for word in answer.split(['=', ' ', '/', ';']) {
                if let Ok(id) = word.parse::<i64>() {
                    if id > 1 << 32 && !ids.contains(&id) {
                        ids.push(id);
                    }
                }
                if let Ok(id) = i64::from_str_radix(word, 16) {
                    if word.len() >= 12 && !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
        }
        steps
            .into_iter()
            .map(|(step, mut answer)| {
                for (n, id) in ids.iter().enumerate() {
                    answer =
                        answer.replace(&id.to_string(), &format!("L{n}")).replace(&format!("{id:x}"), &format!("L{n}"));
                }
                (step, answer)
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn services_match_etcd_3_4() {
        if !std::path::Path::new(ETCD).exists() {
            eprintln!("SKIPPED: {ETCD} is not installed; nothing to compare with");
            return;
        }
        let etcd = Cluster::builder(1).server(ETCD).start().await;
        let expected = with_named_leases(run_script(&etcd.endpoint(0)).await);
        drop(etcd);
        let cluster = Cluster::start(1).await;
        let got = with_named_leases(run_script(&cluster.endpoint(0)).await);
        // The script must have provoked what it is about.
        let all: String = expected.iter().map(|(_, answer)| answer.as_str()).collect();
        for needle in ["election: not leader", "election: no leader", "field must be provided", "granted_ttl=60"] {
            assert!(all.contains(needle), "etcd's transcript lacks {needle:?}: the script no longer tests it");
        }
        for ((step, want), (_, have)) in expected.iter().zip(got.iter()) {
            assert_eq!(have, want, "step {step:?}: concord (left) differs from etcd 3.4 (right)");
        }
        assert_eq!(got.len(), expected.len());
    }
}
