package devgate.example;

import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.handler.codec.haproxy.HAProxyCommand;
import io.netty.handler.codec.haproxy.HAProxyMessage;
import io.netty.util.NetUtil;
import io.netty.util.ReferenceCountUtil;

/**
 * Sits after HAProxyMessageDecoder (PROXY protocol v1 or v2, which devgate
 * can send ahead of the device's bytes): keeps the device's address in the
 * channel's CLIENT attribute and leaves the pipeline once the header is read.
 * A LOCAL header (a health check) carries no address.
 */
final class ProxyHeaderHandler extends ChannelInboundHandlerAdapter {
    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (!(msg instanceof HAProxyMessage)) {
            ctx.fireChannelRead(msg);
            return;
        }
        HAProxyMessage h = (HAProxyMessage) msg;
        try {
            if (h.command() == HAProxyCommand.PROXY && h.sourceAddress() != null) {
                String host = h.sourceAddress();
                if (host.indexOf(':') >= 0 && NetUtil.isValidIpV6Address(host)) {
                    // RFC 5952 form (2001:db8::5), as Go prints it
                    host = NetUtil.toAddressString(NetUtil.getByName(host));
                }
                String addr = host.indexOf(':') >= 0
                        ? "[" + host + "]:" + h.sourcePort()
                        : host + ":" + h.sourcePort();
                ctx.channel().attr(FrameHandler.CLIENT).set(addr);
                Log.debug("PROXY header from " + ctx.channel().remoteAddress() + ": client " + addr);
            }
        } finally {
            ReferenceCountUtil.release(h);
        }
        ctx.pipeline().remove(this);
    }
}
