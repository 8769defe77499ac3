package devgate.example;

import io.netty.bootstrap.ServerBootstrap;
import io.netty.channel.Channel;
import io.netty.channel.ChannelInitializer;
import io.netty.channel.ChannelOption;
import io.netty.channel.ChannelPipeline;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.nio.NioEventLoopGroup;
import io.netty.channel.socket.SocketChannel;
import io.netty.channel.socket.nio.NioServerSocketChannel;
import io.netty.handler.codec.LengthFieldBasedFrameDecoder;
import io.netty.handler.codec.haproxy.HAProxyMessageDecoder;
import io.netty.handler.timeout.IdleStateHandler;

import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * A reference Netty message server for devgate: it frames the device
 * protocol as the gateway does, answers like the Go demo backend
 * (pkg/demo), and registers itself in etcd with a lease.
 *
 * <pre>
 * java -jar build/netty-backend.jar --id n1 --listen 127.0.0.1:9101 \
 *      [--etcd http://127.0.0.1:2379] [--prefix /devgate] [--cluster default] \
 *      [--ttl 10] [--weight 100] [--zone a] [--advertise HOST:PORT] [--proxy-protocol] [--rehome=false]
 * </pre>
 *
 * stdout: "listening HOST:PORT id=ID" once bound, "registered KEY lease=HEX ..."
 * each time the key is (re)written, "deregistered KEY" and "stopped" on SIGTERM.
 */
public final class NettyBackend {
    /** The gateway's default framing (pkg/frame DefaultConfig). */
    static final int MAX_FRAME_LENGTH = 4096;
    static final int LENGTH_FIELD_OFFSET = 4;
    static final int LENGTH_FIELD_LENGTH = 2;
    static final int LENGTH_ADJUSTMENT = 0;
    static final int INITIAL_BYTES_TO_STRIP = 0;

    private NettyBackend() {}

    public static void main(String[] args) throws Exception {
        Options o;
        try {
            o = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("netty-backend: " + e.getMessage());
            System.err.println(Options.USAGE);
            System.exit(2);
            return;
        }
        if (o.help) {
            System.out.println(Options.USAGE);
            return;
        }
        Log.verbose = o.verbose;

        // Started first: the registrar's HTTP client warms up while Netty binds.
        EtcdRegistrar registrar = null;
        if (!o.etcd.isEmpty()) {
            String key = o.prefix + "/" + o.cluster + "/backends/" + o.id;
            registrar = new EtcdRegistrar(o.etcd, key, o.ttl);
        }

        Stats stats = new Stats();
        FrameHandler frames = new FrameHandler(o.id, stats);
        EventLoopGroup boss = new NioEventLoopGroup(1);
        EventLoopGroup workers = new NioEventLoopGroup();
        ServerBootstrap b = new ServerBootstrap()
                .group(boss, workers)
                .channel(NioServerSocketChannel.class)
                .option(ChannelOption.SO_BACKLOG, 1024)
                .childOption(ChannelOption.TCP_NODELAY, true)
                .childOption(ChannelOption.SO_KEEPALIVE, true)
                // Netty's default (false) closes the channel as soon as the
                // peer's FIN is read, failing answers still queued. With
                // it on, FrameHandler closes once they are written.
                .childOption(ChannelOption.ALLOW_HALF_CLOSURE, true)
                .childHandler(new ChannelInitializer<SocketChannel>() {
                    @Override
                    protected void initChannel(SocketChannel ch) {
                        stats.accepted.increment();
                        ChannelPipeline p = ch.pipeline();
                        if (o.proxyProtocol) {
                            // PROXY v1 or v2 from the gateway, before any frame.
                            p.addLast("proxy", new HAProxyMessageDecoder());
                            p.addLast("proxy-info", new ProxyHeaderHandler());
                        }
                        if (o.idleSeconds > 0) {
                            p.addLast("idle", new IdleStateHandler(o.idleSeconds, 0, 0));
                        }
                        // type u8, version u8, time u16, len u16, body[len]:
                        // frame length = 4 + 2 + len + 0, nothing stripped.
                        p.addLast("framer", new LengthFieldBasedFrameDecoder(
                                o.maxFrameLength, LENGTH_FIELD_OFFSET, LENGTH_FIELD_LENGTH,
                                LENGTH_ADJUSTMENT, INITIAL_BYTES_TO_STRIP));
                        p.addLast("frames", frames);
                    }
                });

        Channel server;
        try {
            server = b.bind(o.listenHost, o.listenPort).sync().channel();
        } catch (Exception e) {
            System.err.println("netty-backend: listen " + o.listen + ": " + e);
            boss.shutdownGracefully(0, 0, TimeUnit.SECONDS);
            workers.shutdownGracefully(0, 0, TimeUnit.SECONDS);
            System.exit(1);
            return;
        }
        InetSocketAddress bound = (InetSocketAddress) server.localAddress();
        String listening = hostPort(o.listenHost, bound.getPort());
        String advertise = o.advertise != null ? o.advertise : listening;
        Log.out("listening " + listening + " id=" + o.id);

        if (registrar != null) {
            if (o.advertise == null && bound.getAddress().isAnyLocalAddress()) {
                Log.err("warning: listening on a wildcard address; set --advertise to an address gateways can dial");
            }
            Map<String, Object> value = new LinkedHashMap<>();
            value.put("addr", advertise);
            value.put("weight", o.weight);
            value.put("zone", o.zone);
            Map<String, Object> meta = new LinkedHashMap<>();
            meta.put("impl", "netty");
            if (o.proxyProtocol) {
                meta.put("proxy", "v2"); // asks gateways for a PROXY v2 header with the device's address
            }
            if (o.rehome) {
                meta.put("rehome", "login"); // takes devices moved live: a replayed login resumes the device
            }
            value.put("meta", meta);
            registrar.start(Json.encode(value));
        }

        EtcdRegistrar reg = registrar;
        Thread hook = new Thread(() -> {
            // Leave the ring first (gateways stop sending new devices), then
            // stop accepting and close the connections.
            if (reg != null) {
                reg.stop();
            }
            server.close().awaitUninterruptibly(2, TimeUnit.SECONDS);
            boss.shutdownGracefully(0, 2, TimeUnit.SECONDS).awaitUninterruptibly(3, TimeUnit.SECONDS);
            workers.shutdownGracefully(0, 2, TimeUnit.SECONDS).awaitUninterruptibly(3, TimeUnit.SECONDS);
            Log.out("stopped " + stats);
        }, "shutdown");
        Runtime.getRuntime().addShutdownHook(hook);

        server.closeFuture().sync();
    }

    static String hostPort(String host, int port) {
        return host.indexOf(':') >= 0 ? "[" + host + "]:" + port : host + ":" + port;
    }

    /** Command-line flags: --name value or --name=value. */
    static final class Options {
        static final String USAGE = String.join("\n",
                "usage: netty-backend --id ID --listen HOST:PORT [flags]",
                "  --id ID                backend id, in etcd and in login replies (required)",
                "  --listen HOST:PORT     address to listen on (port 0: any free port)",
                "  --advertise HOST:PORT  address gateways dial (default: listen host and bound port)",
                "  --etcd URLS            etcd endpoints, comma-separated (none: no registration)",
                "  --prefix P             etcd key prefix (default /devgate)",
                "  --cluster C            cluster name (default default)",
                "  --ttl S                lease TTL in seconds (default 10)",
                "  --weight W             ring weight (default 100)",
                "  --zone Z               zone (default empty)",
                "  --max-frame-length N   LengthFieldBasedFrameDecoder maxFrameLength (default 4096)",
                "  --idle-timeout S       close a connection silent for S seconds (default 300, 0: never)",
                "  --proxy-protocol       expect a PROXY v1/v2 header first; login replies carry \"client\"",
                "  --rehome=false         do not register meta rehome=login (default on: take devices moved live)",
                "  --verbose              log connection events to stderr");

        String id;
        String listen;
        String listenHost;
        int listenPort;
        String advertise;
        List<String> etcd = new ArrayList<>();
        String prefix = "/devgate";
        String cluster = "default";
        long ttl = 10;
        int weight = 100;
        String zone = "";
        int maxFrameLength = MAX_FRAME_LENGTH;
        int idleSeconds = 300;
        boolean proxyProtocol;
        boolean rehome = true;
        boolean verbose;
        boolean help;

        static Options parse(String[] args) {
            Options o = new Options();
            for (int i = 0; i < args.length; i++) {
                String a = args[i];
                if (a.equals("-h") || a.equals("--help")) {
                    o.help = true;
                    return o;
                }
                if (!a.startsWith("--")) {
                    throw new IllegalArgumentException("unexpected argument " + a);
                }
                String name = a.substring(2);
                String val = null;
                int eq = name.indexOf('=');
                if (eq >= 0) {
                    val = name.substring(eq + 1);
                    name = name.substring(0, eq);
                }
                if (name.equals("proxy-protocol") || name.equals("verbose") || name.equals("rehome")) {
                    boolean on = val == null || Boolean.parseBoolean(val);
                    if (name.equals("verbose")) {
                        o.verbose = on;
                    } else if (name.equals("rehome")) {
                        o.rehome = on;
                    } else {
                        o.proxyProtocol = on;
                    }
                    continue;
                }
                if (val == null) {
                    if (i + 1 >= args.length) {
                        throw new IllegalArgumentException("--" + name + " needs a value");
                    }
                    val = args[++i];
                }
                switch (name) {
                    case "id": o.id = val; break;
                    case "listen": o.listen = val; break;
                    case "advertise": o.advertise = val; break;
                    case "etcd":
                        for (String e : val.split(",")) {
                            e = e.strip();
                            if (e.isEmpty()) {
                                continue;
                            }
                            if (!e.contains("://")) {
                                e = "http://" + e;
                            }
                            while (e.endsWith("/")) {
                                e = e.substring(0, e.length() - 1);
                            }
                            o.etcd.add(e);
                        }
                        break;
                    case "prefix": o.prefix = val; break;
                    case "cluster": o.cluster = val; break;
                    case "ttl": o.ttl = number(name, val, 1, 3600); break;
                    case "weight": o.weight = (int) number(name, val, 1, 1_000_000); break;
                    case "zone": o.zone = val; break;
                    case "max-frame-length": o.maxFrameLength = (int) number(name, val, 6, 1 << 30); break;
                    case "idle-timeout": o.idleSeconds = (int) number(name, val, 0, 86400); break;
                    default: throw new IllegalArgumentException("unknown flag --" + name);
                }
            }
            if (o.id == null || o.id.isEmpty() || o.id.contains("/")) {
                throw new IllegalArgumentException("--id is required and may not contain '/'");
            }
            if (o.listen == null) {
                throw new IllegalArgumentException("--listen HOST:PORT is required");
            }
            while (o.prefix.endsWith("/")) {
                o.prefix = o.prefix.substring(0, o.prefix.length() - 1);
            }
            if (o.cluster.isEmpty() || o.cluster.contains("/")) {
                throw new IllegalArgumentException("--cluster may not be empty or contain '/'");
            }
            int colon = o.listen.lastIndexOf(':');
            if (colon < 0) {
                throw new IllegalArgumentException("--listen wants HOST:PORT, got " + o.listen);
            }
            o.listenHost = o.listen.substring(0, colon);
            if (o.listenHost.startsWith("[") && o.listenHost.endsWith("]")) {
                o.listenHost = o.listenHost.substring(1, o.listenHost.length() - 1);
            }
            if (o.listenHost.isEmpty()) {
                o.listenHost = "0.0.0.0";
            }
            o.listenPort = (int) number("listen port", o.listen.substring(colon + 1), 0, 65535);
            return o;
        }

        private static long number(String name, String val, long min, long max) {
            long n;
            try {
                n = Long.parseLong(val);
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("--" + name + ": not a number: " + val);
            }
            if (n < min || n > max) {
                throw new IllegalArgumentException("--" + name + " " + n + " out of range " + min + ".." + max);
            }
            return n;
        }
    }
}
