// A streaming agent: answers invoke/v1 with server-sent events when asked for them (Accept: text/event-stream),
// one `delta` per word, 50 ms apart, then `usage` and `done`; with JSON otherwise.
const sse = (event, data) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export default {
  async fetch(request) {
    const body = await request.json();
    const words = `You said: ${body.input.messages.at(-1).content}`.split(/(\s+)/).filter(Boolean);
    if (!(request.headers.get("Accept") || "").includes("text/event-stream")) {
      return Response.json({ protocol: "invoke/v1", output: { text: words.join("") } });
    }
    const { readable, writable } = new TransformStream();
    const writer = writable.getWriter();
    const encoder = new TextEncoder();
    (async () => {
      for (const word of words) {
        await writer.write(encoder.encode(sse("delta", { text: word })));
        await sleep(50);
      }
      await writer.write(encoder.encode(sse("usage", { inputTokens: 1, outputTokens: words.length })));
      await writer.write(encoder.encode(sse("done", {})));
      await writer.close();
    })();
    return new Response(readable, { headers: { "Content-Type": "text/event-stream; charset=utf-8" } });
  },
};
