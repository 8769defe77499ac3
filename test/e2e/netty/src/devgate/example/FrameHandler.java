package devgate.example;

import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import io.netty.channel.ChannelFutureListener;
import io.netty.channel.ChannelHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.SimpleChannelInboundHandler;
import io.netty.channel.socket.ChannelInputShutdownEvent;
import io.netty.handler.codec.DecoderException;
import io.netty.handler.codec.TooLongFrameException;
import io.netty.handler.timeout.IdleStateEvent;
import io.netty.util.AttributeKey;

import java.io.IOException;
import java.nio.charset.StandardCharsets;

/**
 * Answers every whole frame (cut by LengthFieldBasedFrameDecoder) with a
 * frame of the same type, version and time, as the Go demo backend does
 * (pkg/demo): a frame whose JSON body has a "devid" (a login) gets
 * {"backend":"&lt;id&gt;","devid":"&lt;devid&gt;"} (plus "client" when a
 * PROXY header named the device's address); a frame without one whose
 * body has an integer "seq" (a numbered heartbeat) gets
 * {"backend":"&lt;id&gt;","devid":"&lt;devid of this channel's login, or
 * empty&gt;","seq":N}; any other frame is echoed.
 *
 * <p>When the gateway half-closes the channel (it does to move the device
 * to another backend), every frame read is answered, then the channel is
 * closed once those answers are written (needs ALLOW_HALF_CLOSURE).
 *
 * <p>The only state is the channel's device id, kept in a channel
 * attribute, so one instance serves every channel.
 */
@ChannelHandler.Sharable
final class FrameHandler extends SimpleChannelInboundHandler<ByteBuf> {
    /** Header: type u8, version u8, time u16, body length u16 (big-endian). */
    static final int HEADER_LENGTH = 6;
    static final int LENGTH_FIELD_OFFSET = 4;
    static final int MAX_BODY_LENGTH = 0xffff;

    /** The device's address from a PROXY protocol header, "ip:port". */
    static final AttributeKey<String> CLIENT = AttributeKey.valueOf("devgate.client");

    /** The device id of the last login on this channel. */
    static final AttributeKey<String> DEVID = AttributeKey.valueOf("devgate.devid");

    private final String backendId;
    private final Stats stats;

    FrameHandler(String backendId, Stats stats) {
        this.backendId = backendId;
        this.stats = stats;
    }

    @Override
    protected void channelRead0(ChannelHandlerContext ctx, ByteBuf frame) {
        int start = frame.readerIndex();
        int bodyLength = frame.readableBytes() - HEADER_LENGTH;
        // Bytes as chars one to one: the JSON structure is ASCII, and the
        // device id must be printable ASCII, so nothing is lost.
        String body = frame.toString(start + HEADER_LENGTH, bodyLength, StandardCharsets.ISO_8859_1);
        String devid = Json.member(body, "devid");

        byte[] reply = null;
        if (devid != null) {
            StringBuilder b = new StringBuilder(64)
                    .append("{\"backend\":").append(Json.quote(backendId))
                    .append(",\"devid\":").append(Json.quote(devid));
            String client = ctx.channel().attr(CLIENT).get();
            if (client != null) {
                b.append(",\"client\":").append(Json.quote(client));
            }
            reply = b.append('}').toString().getBytes(StandardCharsets.UTF_8);
            stats.logins.increment();
            ctx.channel().attr(DEVID).set(devid);
        } else {
            Long seq = seqOf(body);
            if (seq != null) {
                String login = ctx.channel().attr(DEVID).get();
                reply = ("{\"backend\":" + Json.quote(backendId)
                        + ",\"devid\":" + Json.quote(login != null ? login : "")
                        + ",\"seq\":" + seq + "}").getBytes(StandardCharsets.UTF_8);
                stats.seqs.increment();
            }
        }
        int replyLength = reply != null ? reply.length : bodyLength;
        if (replyLength > MAX_BODY_LENGTH) {
            stats.badFrames.increment();
            ctx.close(); // cannot be framed: the length field is 16 bits
            return;
        }

        ByteBuf out = ctx.alloc().buffer(HEADER_LENGTH + replyLength);
        out.writeBytes(frame, start, LENGTH_FIELD_OFFSET); // type, version, time
        out.writeShort(replyLength);
        if (reply != null) {
            out.writeBytes(reply);
        } else {
            out.writeBytes(frame, start + HEADER_LENGTH, bodyLength);
        }
        stats.frames.increment();
        ctx.write(out); // flushed once per read burst, in channelReadComplete
    }

    /**
     * The integer in the body's "seq" member, read as the device id is (a
     * number, or a string of digits), or null: the Go demo backend's rule.
     */
    static Long seqOf(String body) {
        String v = Json.member(body, "seq");
        if (v == null) {
            return null;
        }
        try {
            return Long.parseLong(v);
        } catch (NumberFormatException e) {
            return null; // 1.5, 1e3, out of range: echoed
        }
    }

    @Override
    public void channelReadComplete(ChannelHandlerContext ctx) {
        ctx.flush();
    }

    /** A device that reads nothing we write does not fill our memory. */
    @Override
    public void channelWritabilityChanged(ChannelHandlerContext ctx) {
        ctx.channel().config().setAutoRead(ctx.channel().isWritable());
        ctx.fireChannelWritabilityChanged();
    }

    /** IdleStateHandler fires this when the device sent nothing for a while. */
    @Override
    public void userEventTriggered(ChannelHandlerContext ctx, Object evt) throws Exception {
        if (evt instanceof IdleStateEvent) {
            ctx.close();
            return;
        }
        if (evt instanceof ChannelInputShutdownEvent) {
            // The gateway half-closed (a move): the frames before the EOF
            // are answered (the decoder passed them on before this event);
            // close once those answers are written, so the gateway can
            // finish the move. Writes complete in order.
            ctx.writeAndFlush(Unpooled.EMPTY_BUFFER).addListener(ChannelFutureListener.CLOSE);
            return;
        }
        super.userEventTriggered(ctx, evt);
    }

    @Override
    public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
        Throwable c = cause instanceof DecoderException && cause.getCause() != null ? cause.getCause() : cause;
        if (cause instanceof TooLongFrameException || c instanceof TooLongFrameException
                || cause instanceof DecoderException) {
            // Too long a frame, or a bad PROXY header: close, as the gateway
            // does with bad input. LengthFieldBasedFrameDecoder alone would
            // skip the frame and carry on.
            stats.badFrames.increment();
            Log.debug("bad frame from " + ctx.channel().remoteAddress() + ", closing: " + c.getMessage());
        } else if (!(cause instanceof IOException)) { // resets are routine
            Log.err("connection " + ctx.channel().remoteAddress() + " failed: " + cause);
        }
        ctx.close();
    }
}
