// Package proto holds the greeter's request and response. They travel as
// JSON (client.ContentType("application/json")), so the example needs no
// protobuf code generation.
package proto

// HelloRequest asks for a greeting.
type HelloRequest struct {
	Name string `json:"name"`
}

// HelloResponse carries the greeting.
type HelloResponse struct {
	Greeting string `json:"greeting"`
}
