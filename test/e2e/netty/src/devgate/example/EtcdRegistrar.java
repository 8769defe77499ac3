package devgate.example;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Keeps {@code <prefix>/<cluster>/backends/<id>} in etcd with a lease, using
 * only the JDK: etcd's JSON gateway (grpc-gateway) over HTTP/1.1.
 *
 * <pre>
 * POST /v3/lease/grant       {"TTL":"10"}                       -> {"ID":"7587...","TTL":"10"}
 * POST /v3/kv/put            {"key":b64,"value":b64,"lease":"7587..."}
 * POST /v3/lease/keepalive   {"ID":"7587..."}                   -> {"result":{"ID":"7587...","TTL":"10"}}
 *                                                                  (no "TTL": the lease is gone)
 * POST /v3/kv/deleterange    {"key":b64}
 * POST /v3/lease/revoke      {"ID":"7587..."}
 * </pre>
 *
 * int64 values travel as JSON strings; keys and values are base64. Errors
 * come back as a non-200 status with {"code":5,"message":"etcdserver:
 * requested lease not found"} (gRPC code and message), or inside a
 * keepalive stream as {"error":{...}}.
 *
 * <p>One thread runs the loop: grant + put, keepalive every TTL/3, and on a
 * lost lease (TTL 0 or "lease not found": etcd restarted without its data,
 * or we were cut off longer than the TTL) grant + put again. While etcd is
 * unreachable it retries with capped, jittered backoff, rotating endpoints;
 * the Netty server keeps serving meanwhile.
 */
final class EtcdRegistrar {
    private static final Duration CONNECT_TIMEOUT = Duration.ofSeconds(2);
    private static final Duration REQUEST_TIMEOUT = Duration.ofSeconds(3);
    private static final int GRPC_NOT_FOUND = 5;

    private final List<String> endpoints;
    private final String key;
    private final CompletableFuture<String> value = new CompletableFuture<>();
    private final long ttlSeconds;
    private volatile HttpClient http; // built on the registrar thread

    private volatile boolean stopping;
    private volatile long lease; // 0: none; set as soon as etcd grants one
    private volatile int endpoint;
    private volatile long grantedTtl; // as etcd granted it (it may raise a short TTL)
    private volatile boolean registered; // the key was put at least once
    private final Thread thread;

    /**
     * Starts the registrar's thread at once: building an HttpClient takes
     * the JVM a second or so (TLS and HTTP classes), which then overlaps
     * with Netty's start. Nothing is written to etcd before start(value).
     */
    EtcdRegistrar(List<String> endpoints, String key, long ttlSeconds) {
        this.endpoints = new ArrayList<>(endpoints);
        this.key = key;
        this.ttlSeconds = ttlSeconds;
        thread = new Thread(this::run, "etcd-registrar");
        thread.setDaemon(true);
        thread.start();
    }

    /** Registers value once the server listens; returns at once. */
    void start(String value) {
        this.value.complete(value);
    }

    private void run() {
        // HTTP/1.1: an http:// HTTP/2 attempt would send an h2c upgrade,
        // which buys nothing here.
        http = HttpClient.newBuilder()
                .version(HttpClient.Version.HTTP_1_1)
                .connectTimeout(CONNECT_TIMEOUT)
                .build();
        String v;
        try {
            v = value.get();
        } catch (InterruptedException | ExecutionException e) {
            return; // stopped before the server listened
        }
        loop(v);
    }

    /**
     * Stops the loop, deletes the key and revokes the lease (either alone
     * would remove the key; the delete makes gateways drop us first even if
     * the revoke fails). Waits at most a few seconds.
     */
    void stop() {
        stopping = true;
        thread.interrupt(); // HttpClient.send gives up on interrupt
        try {
            thread.join(2000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        long id = lease;
        boolean deleted = false;
        for (int i = 0; registered && i < endpoints.size() && !deleted; i++) {
            try {
                deleteKey();
                deleted = true;
            } catch (Exception e) {
                Log.err("etcd: delete " + key + " via " + endpoints.get(endpoint) + ": " + describe(e));
                nextEndpoint();
            }
        }
        if (id != 0) {
            for (int i = 0; i < endpoints.size(); i++) {
                try {
                    revoke(id);
                    break;
                } catch (LeaseNotFound e) {
                    break; // gone already: nothing to revoke
                } catch (Exception e) {
                    Log.err("etcd: revoke lease " + hex(id) + ": " + describe(e));
                    nextEndpoint();
                }
            }
        }
        if (deleted) {
            Log.out("deregistered " + key);
        }
    }

    private void loop(String value) {
        long delay = 0;
        int failures = 0;
        while (!stopping) {
            if (delay > 0 && !sleep(delay)) {
                break;
            }
            try {
                if (lease == 0) {
                    register(value);
                } else {
                    long ttl = keepAlive(lease);
                    if (ttl <= 0) {
                        throw new LeaseNotFound("keepalive returned TTL 0");
                    }
                }
                failures = 0;
                delay = keepAliveInterval();
            } catch (LeaseNotFound e) {
                if (stopping) {
                    break;
                }
                Log.out("lease lost " + key + (lease != 0 ? " lease=" + hex(lease) : "")
                        + " (" + e.getMessage() + "), registering again");
                lease = 0;
                delay = 0; // grant a new one at once
            } catch (InterruptedException e) {
                break; // stop() interrupts us
            } catch (Exception e) {
                if (stopping) {
                    break;
                }
                failures++;
                delay = backoff(failures);
                Log.err("etcd " + endpoints.get(endpoint) + ": " + describe(e)
                        + (lease == 0 ? "; not registered" : "; lease " + hex(lease) + " not renewed")
                        + ", retry in " + delay + " ms");
                nextEndpoint();
            }
        }
    }

    /** Grants a lease and puts the key with it. */
    private void register(String value) throws IOException, EtcdException, InterruptedException {
        Map<String, Object> grant = new LinkedHashMap<>();
        grant.put("TTL", Long.toString(ttlSeconds));
        Object r = post("/v3/lease/grant", grant);
        long id = Json.getLong(r, "ID");
        long ttl = Json.getLong(r, "TTL");
        if (id == 0 || ttl <= 0) {
            throw new EtcdException(-1, "lease grant answered " + Json.encode(r));
        }
        lease = id;
        Map<String, Object> put = new LinkedHashMap<>();
        put.put("key", b64(key));
        put.put("value", b64(value));
        put.put("lease", Long.toString(id));
        try {
            post("/v3/kv/put", put);
        } catch (IOException | EtcdException e) {
            lease = 0; // let it expire; revoking may fail for the same reason
            try {
                revoke(id);
            } catch (Exception ignored) {
                // it times out by itself
            }
            throw e;
        }
        grantedTtl = ttl;
        registered = true;
        Log.out("registered " + key + " lease=" + hex(id) + " ttl=" + ttl + " addr=" + addrOf(value)
                + " etcd=" + endpoints.get(endpoint));
    }

    /** Renews the lease once; returns the TTL left, 0 if the lease is gone. */
    private long keepAlive(long id) throws IOException, EtcdException, InterruptedException {
        Map<String, Object> req = new LinkedHashMap<>();
        req.put("ID", Long.toString(id));
        // A streaming RPC through the gateway: one request line in, one
        // {"result":...} or {"error":...} line out, then the stream ends.
        String body = postRaw("/v3/lease/keepalive", Json.encode(req));
        for (String line : body.split("\n")) {
            if (line.isBlank()) {
                continue;
            }
            Object msg = Json.parse(line);
            Object err = Json.get(msg, "error");
            if (err != null) {
                throw EtcdException.of(err);
            }
            return Json.getLong(Json.get(msg, "result"), "TTL");
        }
        throw new EtcdException(-1, "empty keepalive answer");
    }

    private void revoke(long id) throws IOException, EtcdException, InterruptedException {
        Map<String, Object> req = new LinkedHashMap<>();
        req.put("ID", Long.toString(id));
        post("/v3/lease/revoke", req);
    }

    private void deleteKey() throws IOException, EtcdException, InterruptedException {
        Map<String, Object> req = new LinkedHashMap<>();
        req.put("key", b64(key));
        post("/v3/kv/deleterange", req);
    }

    private Object post(String path, Map<String, Object> req)
            throws IOException, EtcdException, InterruptedException {
        return Json.parse(postRaw(path, Json.encode(req)));
    }

    private String postRaw(String path, String json) throws IOException, EtcdException, InterruptedException {
        HttpRequest req = HttpRequest.newBuilder(URI.create(endpoints.get(endpoint) + path))
                .timeout(REQUEST_TIMEOUT)
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(json, StandardCharsets.UTF_8))
                .build();
        HttpResponse<String> resp = http.send(req, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        if (resp.statusCode() != 200) {
            Object err;
            try {
                err = Json.parse(resp.body());
            } catch (IllegalArgumentException e) {
                throw new EtcdException(-1, "HTTP " + resp.statusCode() + ": " + resp.body().strip());
            }
            throw EtcdException.of(err);
        }
        return resp.body();
    }

    private long keepAliveInterval() {
        long ttl = grantedTtl > 0 ? grantedTtl : ttlSeconds;
        return Math.max(500, ttl * 1000 / 3);
    }

    /** 250 ms doubling, capped at the keepalive interval (and 5 s), +-20%. */
    private long backoff(int failures) {
        long cap = Math.min(5000, keepAliveInterval());
        long d = Math.min(cap, 250L << Math.min(failures - 1, 10));
        return d * (80 + ThreadLocalRandom.current().nextInt(41)) / 100;
    }

    private void nextEndpoint() {
        endpoint = (endpoint + 1) % endpoints.size();
    }

    /** Sleeps; false if stop() interrupted it. */
    private boolean sleep(long ms) {
        try {
            Thread.sleep(ms);
            return !stopping;
        } catch (InterruptedException e) {
            return false;
        }
    }

    private static String b64(String s) {
        return Base64.getEncoder().encodeToString(s.getBytes(StandardCharsets.UTF_8));
    }

    /** ConnectException and friends often have no message. */
    private static String describe(Exception e) {
        String m = e.getMessage();
        return m == null || m.isEmpty() ? e.getClass().getSimpleName() : m;
    }

    /** Lease ids as etcdctl prints them. */
    static String hex(long id) {
        return Long.toHexString(id);
    }

    private static String addrOf(String value) {
        Object a = Json.get(Json.parse(value), "addr");
        return a == null ? "?" : a.toString();
    }

    /** An error answer from etcd: gRPC code and message. */
    static class EtcdException extends Exception {
        private static final long serialVersionUID = 1L;
        final int code;

        EtcdException(int code, String message) {
            super(message);
            this.code = code;
        }

        /** From {"code":5,"message":"..."} or {"grpc_code":5,...}. */
        static EtcdException of(Object err) {
            long code = -1;
            Object c = Json.get(err, "code");
            if (c == null) {
                c = Json.get(err, "grpc_code");
            }
            if (c != null) {
                try {
                    code = Long.parseLong(c.toString());
                } catch (NumberFormatException ignored) {
                    // keep -1
                }
            }
            Object m = Json.get(err, "message");
            if (m == null) {
                m = Json.get(err, "error");
            }
            String msg = m == null ? Json.encode(err) : m.toString();
            if (code == GRPC_NOT_FOUND && msg.contains("lease not found")) {
                return new LeaseNotFound(msg);
            }
            return new EtcdException((int) code, "etcd error " + code + ": " + msg);
        }
    }

    /** The lease expired or was revoked: register again with a new one. */
    static final class LeaseNotFound extends EtcdException {
        private static final long serialVersionUID = 1L;

        LeaseNotFound(String message) {
            super(GRPC_NOT_FOUND, message);
        }
    }
}
