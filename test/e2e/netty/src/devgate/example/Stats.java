package devgate.example;

import java.util.concurrent.atomic.LongAdder;

/** Counters since start, printed at shutdown. */
final class Stats {
    final LongAdder accepted = new LongAdder();
    final LongAdder frames = new LongAdder();
    final LongAdder logins = new LongAdder();
    final LongAdder seqs = new LongAdder();
    final LongAdder badFrames = new LongAdder();

    @Override
    public String toString() {
        return "accepted=" + accepted.sum() + " frames=" + frames.sum()
                + " logins=" + logins.sum() + " seqs=" + seqs.sum() + " badFrames=" + badFrames.sum();
    }
}
