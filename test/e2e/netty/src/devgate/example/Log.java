package devgate.example;

import java.time.Instant;

/**
 * stdout carries the few lines tests wait for ("listening ...",
 * "registered ..."); everything else goes to stderr.
 */
final class Log {
    static volatile boolean verbose;

    private Log() {}

    /** A line for stdout, flushed at once so a test reading a pipe sees it. */
    static synchronized void out(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static void err(String line) {
        System.err.println(Instant.now() + " " + line);
    }

    static void debug(String line) {
        if (verbose) {
            err(line);
        }
    }
}
