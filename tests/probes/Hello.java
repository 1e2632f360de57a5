// Hello.java: a Java hello world for the seccomp runtime tests (the JVM itself starts threads).
public class Hello {
    public static void main(String[] args) throws Exception {
        Thread t = new Thread(() -> System.out.println("hello from Java"));
        t.start();
        t.join();
    }
}
