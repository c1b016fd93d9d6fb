// probe: the one static program in the real node's own images (no shell, no libc).
//
//	probe pause              the pod sandbox: sleep until SIGTERM or SIGINT
//	probe serve PORT         answer every HTTP request with "probe <hostname>"
//	probe get URL [CA TOKEN] print the body of one GET, exit 1 on any failure; with a CA
//	                         bundle and a bearer token file (a pod's service account)
//	probe resolve NAME       print NAME's addresses (the Go resolver reads /etc/resolv.conf)
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe pause | serve PORT | get URL | resolve NAME")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pause":
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
	case "serve":
		host, _ := os.Hostname()
		http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "probe %s\n", host)
		})
		server := &http.Server{Addr: ":" + os.Args[2], ReadHeaderTimeout: 5 * time.Second}
		fmt.Println("serving on", server.Addr)
		if err := server.ListenAndServe(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "get":
		client := http.Client{Timeout: 5 * time.Second}
		request, err := http.NewRequest(http.MethodGet, os.Args[2], nil)
		if err == nil && len(os.Args) > 4 {
			err = trust(&client, request, os.Args[3], os.Args[4])
		}
		var answer *http.Response
		if err == nil {
			answer, err = client.Do(request)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer answer.Body.Close()
		body, _ := io.ReadAll(answer.Body)
		fmt.Print(string(body))
		if answer.StatusCode != http.StatusOK {
			os.Exit(1)
		}
	case "resolve":
		addresses, err := net.LookupHost(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		for _, address := range addresses {
			fmt.Println(address)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

// trust makes client verify the server with the CA bundle at caFile and sends the token.
func trust(client *http.Client, request *http.Request, caFile, tokenFile string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("no certificate in %s", caFile)
	}
	client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	request.Header.Set("Authorization", "Bearer "+string(token))
	return nil
}
