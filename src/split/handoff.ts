// The drain and hand-off API of split inference (docs/split-inference.md, "Drain"), re-exported by index.ts.
export { HANDOFF_ERRORS, SessionMovedError } from './handoff-errors.ts'
export { HANDOFF_PROTOCOL, HANDOFF_MAX_MESSAGE_BYTES, HANDOFF_WINDOW_BYTES, HandoffWire } from './handoff-wire.ts'
export { sessionMovedTo, resumeHandedOffSession, type Handoff, type ResumeRequest } from './handoff-client.ts'
export type { DrainOptions, DrainResult, DrainedSession } from './server.ts'
