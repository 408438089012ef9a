// A multi-module agent: it adds two numbers from a JSON data file with a WebAssembly module, and quotes a text
// file. It speaks invoke/v1: {protocol, input: {messages}} in, {protocol, output: {text}} out.
import add from "../lib/add.wasm";
import numbers from "../data/numbers.json";
import note from "../data/note.txt";

const { exports } = new WebAssembly.Instance(add);

export default {
  async fetch(request, env) {
    const body = await request.json();
    const asked = body.input.messages.at(-1).content;
    const sum = exports.add(numbers.a, numbers.b);
    return Response.json({ protocol: "invoke/v1", output: { text: `${env.GREETING} ${numbers.a}+${numbers.b}=${sum}; you said "${asked}"; ${note.trim()}` } });
  },
};
