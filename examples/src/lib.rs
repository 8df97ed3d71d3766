//! The bundled `mediator` binary and the demo nodes.
