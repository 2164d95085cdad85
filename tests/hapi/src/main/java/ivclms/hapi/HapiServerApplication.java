package ivclms.hapi;

import ca.uhn.fhir.rest.server.RestfulServer;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;

/**
 * Test-harness launcher for a real HAPI FHIR JPA server (FHIR R4, H2), served at
 * {@code http://127.0.0.1:<server.port>/fhir}. All HAPI wiring lives in {@link HapiServerConfig};
 * runtime settings (port, bind address, datasource URL, ...) are in application.properties and can be
 * overridden with the usual Spring Boot mechanisms (--key=value, -Dkey=value, environment).
 */
@SpringBootApplication
public class HapiServerApplication {

	public static void main(String[] args) {
		SpringApplication.run(HapiServerApplication.class, args);
	}

	/** Mounts HAPI's RestfulServer servlet at /fhir/* inside the embedded Tomcat. */
	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServlet(RestfulServer theRestfulServer) {
		ServletRegistrationBean<RestfulServer> registration =
				new ServletRegistrationBean<>(theRestfulServer, "/fhir/*");
		registration.setName("fhir");
		registration.setLoadOnStartup(1);
		return registration;
	}
}
