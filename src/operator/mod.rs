//! The operator session core: one `OperatorSession` per sid, shared by every transport.
