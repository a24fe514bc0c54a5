// Package demo is the built-in demo model of `wecom-bridge demo`: an
// llm.Backend that needs no service, no key and no network. It streams a
// fixed Markdown answer, labelled as a demo in Chinese and English, that
// echoes the question and shows what the bridge does with a real answer:
// several paragraphs, a list and a table, streamed in small deltas with a
// short pause between them, so that splitting into WeCom messages and the
// Markdown-to-text rendering can be watched in a terminal.
//
// It keeps no conversation of its own: like an OpenAI-compatible backend it
// reads the earlier turns from llm.Request.History, and says which question
// of the conversation it is answering, so /new can be seen to work.
//
// # Caveats
//
//   - The answer does not depend on the question beyond echoing it.
//   - Delays are real sleeps (Config.Delay); a cancelled ctx ends the stream
//     with the partial answer and ctx's error, as real backends do.
package demo
